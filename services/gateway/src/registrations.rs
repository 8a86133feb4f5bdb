//! Persistence of SIP registrations: device accounts (digest secrets) and
//! the contacts bound to them, so a restart keeps every phone reachable.

use switchboard_store::{sqlx, Database};
use sqlx::Row;

use crate::sip::registrar::{Account, Binding, Change};
use crate::sip::Destination;

/// Registration storage over the Switchboard database.
#[derive(Debug, Clone)]
pub struct Registrations {
    db: Database,
}

impl Registrations {
    pub fn new(db: Database) -> Registrations {
        Registrations { db }
    }

    /// The device whose digest username is `username`, with its secrets.
    pub async fn account(&self, username: &str) -> Result<Option<(String, Account)>, sqlx::Error> {
        let row = sqlx::query("SELECT id, sip_username, ha1_md5, ha1_sha256 FROM devices WHERE sip_username = $1 AND ha1_md5 IS NOT NULL")
            .bind(username)
            .fetch_optional(self.db.pool())
            .await?;
        row.map(|r| {
            Ok((
                r.try_get("id")?,
                Account { username: r.try_get("sip_username")?, ha1_md5: r.try_get("ha1_md5")?, ha1_sha256: r.try_get("ha1_sha256")? },
            ))
        })
        .transpose()
    }

    /// The live (unexpired at `now`, Unix seconds) bindings of a device.
    pub async fn bindings(&self, device_id: &str, now: u64) -> Result<Vec<Binding>, sqlx::Error> {
        let rows = sqlx::query("SELECT contact, expires_at, call_id, cseq, source FROM registrations WHERE device_id = $1 AND expires_at > $2 ORDER BY expires_at DESC")
            .bind(device_id)
            .bind(now as i64)
            .fetch_all(self.db.pool())
            .await?;
        Ok(rows.iter().filter_map(binding_from_row).collect())
    }

    /// Applies the registrar's changes for a device in one transaction.
    pub async fn apply(&self, device_id: &str, changes: &[Change]) -> Result<(), sqlx::Error> {
        let mut tx = self.db.pool().begin().await?;
        for change in changes {
            match change {
                Change::RemoveAll => {
                    sqlx::query("DELETE FROM registrations WHERE device_id = $1").bind(device_id).execute(&mut *tx).await?;
                }
                Change::Remove { contact } => {
                    sqlx::query("DELETE FROM registrations WHERE device_id = $1 AND contact = $2")
                        .bind(device_id)
                        .bind(contact.as_str())
                        .execute(&mut *tx)
                        .await?;
                }
                Change::Upsert(b) => {
                    sqlx::query(
                        "INSERT INTO registrations (device_id, contact, expires_at, call_id, cseq, source) VALUES ($1, $2, $3, $4, $5, $6) \
                         ON CONFLICT (device_id, contact) DO UPDATE SET expires_at = excluded.expires_at, call_id = excluded.call_id, cseq = excluded.cseq, source = excluded.source",
                    )
                    .bind(device_id)
                    .bind(b.contact.as_str())
                    .bind(b.expires_at as i64)
                    .bind(b.call_id.as_str())
                    .bind(b.cseq as i64)
                    .bind(encode_source(&b.source))
                    .execute(&mut *tx)
                    .await?;
                }
            }
        }
        tx.commit().await
    }
}

fn encode_source(d: &Destination) -> String {
    match d {
        Destination::Udp(a) => format!("udp:{a}"),
        Destination::Tcp(a) => format!("tcp:{a}"),
        Destination::Tls(a) => format!("tls:{a}"),
    }
}

fn decode_source(s: &str) -> Option<Destination> {
    let (kind, addr) = s.split_once(':')?;
    let addr = addr.parse().ok()?;
    match kind {
        "udp" => Some(Destination::Udp(addr)),
        "tcp" => Some(Destination::Tcp(addr)),
        "tls" => Some(Destination::Tls(addr)),
        _ => None,
    }
}

fn binding_from_row(r: &sqlx::any::AnyRow) -> Option<Binding> {
    Some(Binding {
        contact: r.try_get("contact").ok()?,
        expires_at: r.try_get::<i64, _>("expires_at").ok()? as u64,
        call_id: r.try_get("call_id").ok()?,
        cseq: r.try_get::<i64, _>("cseq").ok()? as u32,
        source: decode_source(&r.try_get::<String, _>("source").ok()?)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::directory::{Directory, NewDevice, NewUser};

    #[tokio::test]
    async fn accounts_and_bindings_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::connect(&format!("sqlite://{}", dir.path().join("r.db").display())).await.unwrap();
        db.migrate().await.unwrap();
        let d = Directory::new(db.clone());
        let u = d.create_user(NewUser { name: "Ada".into(), ..Default::default() }).await.unwrap();
        let dev = d.create_device(NewDevice { user_id: u.id, name: "desk".into(), contact_uri: "sip:ada@127.0.0.1:5090".into() }).await.unwrap();
        assert!(d.set_device_credentials(&dev.id, "ada", "short", "sb").await.is_err(), "weak password refused");
        d.set_device_credentials(&dev.id, "ada", "correct horse battery", "sb").await.unwrap();
        let regs = Registrations::new(db);
        let (device_id, account) = regs.account("ada").await.unwrap().unwrap();
        assert_eq!(device_id, dev.id);
        assert_eq!(account.ha1_md5, Account::from_password("ada", "sb", "correct horse battery").ha1_md5);
        assert!(regs.account("eve").await.unwrap().is_none());

        let b = Binding { contact: "sip:ada@10.0.0.5:5060".into(), expires_at: 2000, call_id: "c".into(), cseq: 2, source: Destination::Udp("127.0.0.1:40000".parse().unwrap()) };
        regs.apply(&dev.id, &[Change::Upsert(b.clone())]).await.unwrap();
        let refreshed = Binding { expires_at: 3000, cseq: 3, ..b.clone() };
        regs.apply(&dev.id, &[Change::Upsert(refreshed.clone())]).await.unwrap();
        assert_eq!(regs.bindings(&dev.id, 1000).await.unwrap(), vec![refreshed]);
        assert!(regs.bindings(&dev.id, 3000).await.unwrap().is_empty(), "expired bindings are not live");
        regs.apply(&dev.id, &[Change::RemoveAll]).await.unwrap();
        assert!(regs.bindings(&dev.id, 1000).await.unwrap().is_empty());

        let over_tls = Binding { source: Destination::Tls("[2001:db8::5]:40001".parse().unwrap()), ..b };
        regs.apply(&dev.id, &[Change::Upsert(over_tls.clone())]).await.unwrap();
        assert_eq!(regs.bindings(&dev.id, 1000).await.unwrap(), vec![over_tls]);
    }
}
