//! The registrar (RFC 3261 §10.3) as a pure function: a REGISTER request,
//! the account it claims and its current bindings in; the response, the
//! binding changes and the authentication outcome out. Persistence, rate
//! limiting and banning live with the caller.

use super::digest::{self, Algorithm, Challenge, Credentials, Nonces, Verdict};
use super::headers::{param, NameAddr};
use super::message::SipMessage;
use super::response::make_response;
use super::transport::Destination;

/// Shortest registration accepted (RFC 3261 §10.3 step 7: 423 below it).
pub const MIN_EXPIRES: u64 = 60;
/// Longest registration granted; longer requests are shortened.
pub const MAX_EXPIRES: u64 = 7200;
/// Granted when the device asks for no particular time.
pub const DEFAULT_EXPIRES: u64 = 3600;

/// A device account: the digest secrets stored for it (never the password).
#[derive(Debug, Clone)]
pub struct Account {
    /// The user part of the address of record, also the digest username.
    pub username: String,
    pub ha1_md5: String,
    pub ha1_sha256: String,
}

impl Account {
    /// Derives the stored secrets from a password.
    pub fn from_password(username: &str, realm: &str, password: &str) -> Account {
        Account {
            username: username.to_owned(),
            ha1_md5: digest::ha1(Algorithm::Md5, username, realm, password),
            ha1_sha256: digest::ha1(Algorithm::Sha256, username, realm, password),
        }
    }

    fn ha1(&self, algorithm: Algorithm) -> &str {
        match algorithm {
            Algorithm::Md5 => &self.ha1_md5,
            Algorithm::Sha256 => &self.ha1_sha256,
        }
    }
}

/// A contact bound to an address of record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    pub contact: String,
    /// Unix seconds.
    pub expires_at: u64,
    pub call_id: String,
    pub cseq: u32,
    /// Where the REGISTER came from: requests to this contact go there
    /// (the device may be behind NAT).
    pub source: Destination,
}

/// What to do to the stored bindings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Upsert(Binding),
    Remove { contact: String },
    RemoveAll,
}

/// How authentication went, for metrics and brute-force throttling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthOutcome {
    /// No credentials yet: challenged.
    Challenged,
    Accepted,
    Stale,
    /// Wrong credentials (counts towards a ban).
    Failed,
}

/// The registrar's answer.
#[derive(Debug)]
pub struct Outcome {
    pub response: SipMessage,
    pub changes: Vec<Change>,
    pub auth: AuthOutcome,
}

/// Fixed facts of this registrar.
#[derive(Debug, Clone)]
pub struct Registrar {
    pub realm: String,
    pub nonces: Nonces,
    pub user_agent: String,
    /// Algorithms offered in challenges, most preferred first (RFC 8760).
    pub algorithms: Vec<Algorithm>,
}

impl Registrar {
    /// Handles one REGISTER. `account` is the account of the credentials'
    /// username (`None` if unknown); the answer for an unknown user is the
    /// same as for a wrong password.
    pub fn handle(&self, req: &SipMessage, source: Destination, account: Option<&Account>, bindings: &[Binding], now: u64) -> Outcome {
        let creds = req.header("Authorization").and_then(Credentials::parse);
        let Some(creds) = creds else {
            return self.challenge(req, false, AuthOutcome::Challenged, now);
        };
        let stored = account.filter(|a| a.username == creds.username).map(|a| a.ha1(creds.algorithm).to_owned());
        match digest::verify(&creds, "REGISTER", &self.realm, stored.as_deref(), &self.nonces, now) {
            Verdict::Accepted => {}
            Verdict::Stale => return self.challenge(req, true, AuthOutcome::Stale, now),
            Verdict::Rejected => return self.challenge(req, false, AuthOutcome::Failed, now),
        }
        // Authenticated: the address of record must be the account's own.
        let aor_user = req.header("To").and_then(NameAddr::parse).and_then(|n| n.user());
        if aor_user.as_deref() != Some(creds.username.as_str()) {
            return self.reply(req, 403, AuthOutcome::Accepted, Vec::new(), bindings, now);
        }
        let call_id = req.header("Call-ID").unwrap_or("").to_owned();
        let cseq = req.header("CSeq").and_then(super::headers::CSeq::parse).map(|c| c.seq).unwrap_or(0);
        let header_expires = req.header("Expires").and_then(|e| e.trim().parse::<u64>().ok());
        let contacts = req.header_values("Contact");
        if contacts.iter().any(|c| c.trim() == "*") {
            if contacts.len() != 1 || header_expires != Some(0) {
                return self.reply(req, 400, AuthOutcome::Accepted, Vec::new(), bindings, now);
            }
            return self.reply(req, 200, AuthOutcome::Accepted, vec![Change::RemoveAll], &[], now);
        }
        let mut changes = Vec::new();
        let mut after: Vec<Binding> = bindings.iter().filter(|b| b.expires_at > now).cloned().collect();
        for c in contacts {
            let Some(na) = NameAddr::parse(c) else {
                return self.reply(req, 400, AuthOutcome::Accepted, Vec::new(), bindings, now);
            };
            let asked = param(&na.params, "expires").and_then(|e| e.parse::<u64>().ok()).or(header_expires).unwrap_or(DEFAULT_EXPIRES);
            if asked != 0 && asked < MIN_EXPIRES {
                let mut r = make_response(req, 423, Some("sb-reg"), &self.user_agent);
                r.push_header("Min-Expires", MIN_EXPIRES.to_string());
                return Outcome { response: r, changes: Vec::new(), auth: AuthOutcome::Accepted };
            }
            if let Some(existing) = after.iter().find(|b| b.contact == na.uri) {
                if existing.call_id == call_id && cseq <= existing.cseq {
                    // Out of order or replayed REGISTER: abort the update.
                    return self.reply(req, 500, AuthOutcome::Accepted, Vec::new(), bindings, now);
                }
            }
            after.retain(|b| b.contact != na.uri);
            if asked == 0 {
                changes.push(Change::Remove { contact: na.uri.clone() });
            } else {
                let binding = Binding {
                    contact: na.uri.clone(),
                    expires_at: now + asked.min(MAX_EXPIRES),
                    call_id: call_id.clone(),
                    cseq,
                    source,
                };
                after.push(binding.clone());
                changes.push(Change::Upsert(binding));
            }
        }
        self.reply(req, 200, AuthOutcome::Accepted, changes, &after, now)
    }

    /// Authenticates a request other than REGISTER (an INVITE from a
    /// device) with `Proxy-Authorization`, RFC 3261 §22.3. Returns the
    /// verdict and, unless accepted, the 407 to send. Unknown users and
    /// wrong passwords get the same answer.
    pub fn authenticate(&self, req: &SipMessage, account: Option<&Account>, now: u64) -> (AuthOutcome, Option<SipMessage>) {
        let method = req.method().unwrap_or("INVITE");
        let creds = req.header_values("Proxy-Authorization").into_iter().filter_map(Credentials::parse).find(|c| c.realm == self.realm);
        let Some(creds) = creds else {
            return (AuthOutcome::Challenged, Some(self.challenge_with(req, 407, false, now)));
        };
        let stored = account.filter(|a| a.username == creds.username).map(|a| a.ha1(creds.algorithm).to_owned());
        match digest::verify(&creds, method, &self.realm, stored.as_deref(), &self.nonces, now) {
            Verdict::Accepted => (AuthOutcome::Accepted, None),
            Verdict::Stale => (AuthOutcome::Stale, Some(self.challenge_with(req, 407, true, now))),
            Verdict::Rejected => (AuthOutcome::Failed, Some(self.challenge_with(req, 407, false, now))),
        }
    }

    fn challenge(&self, req: &SipMessage, stale: bool, auth: AuthOutcome, now: u64) -> Outcome {
        Outcome { response: self.challenge_with(req, 401, stale, now), changes: Vec::new(), auth }
    }

    /// A 401 (WWW-Authenticate) or 407 (Proxy-Authenticate) challenge.
    fn challenge_with(&self, req: &SipMessage, code: u16, stale: bool, now: u64) -> SipMessage {
        let header = if code == 407 { "Proxy-Authenticate" } else { "WWW-Authenticate" };
        let mut r = make_response(req, code, Some("sb-reg"), &self.user_agent);
        // One challenge per algorithm, most preferred first (RFC 8760 §2.4).
        for &algorithm in &self.algorithms {
            let c = Challenge {
                realm: self.realm.clone(),
                nonce: self.nonces.issue(&self.realm, now),
                algorithm,
                opaque: None,
                qop_auth: true,
                stale,
            };
            r.push_header(header, c.to_header());
        }
        r
    }

    fn reply(&self, req: &SipMessage, code: u16, auth: AuthOutcome, changes: Vec<Change>, bindings: &[Binding], now: u64) -> Outcome {
        let mut r = make_response(req, code, Some("sb-reg"), &self.user_agent);
        if code == 200 {
            for b in bindings.iter().filter(|b| b.expires_at > now) {
                r.push_header("Contact", format!("<{}>;expires={}", b.contact, b.expires_at - now));
            }
        }
        Outcome { response: r, changes, auth }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::digest::answer;

    const REALM: &str = "switchboard";

    fn registrar() -> Registrar {
        Registrar {
            realm: REALM.into(),
            nonces: Nonces::new([9; 32], 300),
            user_agent: "SB".into(),
            algorithms: vec![Algorithm::Sha256, Algorithm::Md5],
        }
    }

    #[test]
    fn invites_are_authenticated_with_proxy_authorization() {
        let reg = registrar();
        let account = Account::from_password("ada", REALM, "pw");
        let mut inv = SipMessage::request("INVITE", "sip:+14155550100@gw");
        inv.push_header("Via", "SIP/2.0/UDP 127.0.0.1:5090;branch=z9hG4bKi")
            .push_header("From", "<sip:ada@gw>;tag=a")
            .push_header("To", "<sip:+14155550100@gw>")
            .push_header("Call-ID", "i1")
            .push_header("CSeq", "1 INVITE");
        let (outcome, r) = reg.authenticate(&inv, Some(&account), 1000);
        assert_eq!(outcome, AuthOutcome::Challenged);
        let r = r.unwrap();
        assert_eq!(r.status(), Some(407));
        let challenge = Challenge::parse(r.header("Proxy-Authenticate").unwrap()).unwrap();
        let good = answer(&challenge, "ada", "pw", "INVITE", "sip:+14155550100@gw", "cn", 1);
        let mut signed = inv.clone();
        signed.push_header("Proxy-Authorization", good.to_header());
        assert_eq!(reg.authenticate(&signed, Some(&account), 1000).0, AuthOutcome::Accepted);
        // Wrong password and unknown user are answered alike.
        let bad = answer(&challenge, "ada", "nope", "INVITE", "sip:+14155550100@gw", "cn", 1);
        let mut wrong = inv.clone();
        wrong.push_header("Proxy-Authorization", bad.to_header());
        let (o1, r1) = reg.authenticate(&wrong, Some(&account), 1000);
        let (o2, r2) = reg.authenticate(&signed, None, 1000);
        assert_eq!((o1, o2), (AuthOutcome::Failed, AuthOutcome::Failed));
        assert_eq!(r1.unwrap().status(), r2.unwrap().status());
    }

    fn source() -> Destination {
        Destination::Udp("127.0.0.1:5090".parse().unwrap())
    }

    fn register(user: &str, contact: &str, cseq: u32, extra: &str) -> SipMessage {
        let text = format!(
            "REGISTER sip:{REALM} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5090;branch=z9hG4bK{cseq}\r\nFrom: <sip:{user}@{REALM}>;tag=f\r\nTo: <sip:{user}@{REALM}>\r\nCall-ID: reg-1\r\nCSeq: {cseq} REGISTER\r\nContact: {contact}\r\n{extra}\r\n"
        );
        SipMessage::parse(text.as_bytes(), 65535).unwrap()
    }

    fn authorized(r: &Registrar, mut req: SipMessage, user: &str, password: &str, challenge_from: &SipMessage) -> SipMessage {
        let c = Challenge::parse(challenge_from.header("WWW-Authenticate").unwrap()).unwrap();
        req.push_header("Authorization", answer(&c, user, password, "REGISTER", &format!("sip:{}", r.realm), "cn", 1).to_header());
        req
    }

    #[test]
    fn challenge_then_register_then_unregister() {
        let r = registrar();
        let acct = Account::from_password("ada", REALM, "pw");
        let first = r.handle(&register("ada", "<sip:ada@127.0.0.1:5090>", 1, ""), source(), Some(&acct), &[], 1000);
        assert_eq!(first.response.status(), Some(401));
        assert_eq!(first.auth, AuthOutcome::Challenged);
        assert_eq!(first.response.header_values("WWW-Authenticate").len(), 2);

        let req = authorized(&r, register("ada", "<sip:ada@127.0.0.1:5090>;expires=100000", 2, ""), "ada", "pw", &first.response);
        let ok = r.handle(&req, source(), Some(&acct), &[], 1000);
        assert_eq!(ok.response.status(), Some(200));
        let Change::Upsert(b) = &ok.changes[0] else { panic!() };
        assert_eq!(b.expires_at, 1000 + MAX_EXPIRES, "long requests are shortened");
        assert!(ok.response.header("Contact").unwrap().contains("expires=7200"));

        let bindings = vec![b.clone()];
        let req = authorized(&r, register("ada", "*", 3, "Expires: 0\r\n"), "ada", "pw", &first.response);
        let bye = r.handle(&req, source(), Some(&acct), &bindings, 1001);
        assert_eq!(bye.response.status(), Some(200));
        assert_eq!(bye.changes, vec![Change::RemoveAll]);
    }

    #[test]
    fn wrong_password_and_unknown_user_look_the_same() {
        let r = registrar();
        let acct = Account::from_password("ada", REALM, "pw");
        let first = r.handle(&register("ada", "<sip:a@h>", 1, ""), source(), Some(&acct), &[], 1000);
        let wrong = authorized(&r, register("ada", "<sip:a@h>", 2, ""), "ada", "guess", &first.response);
        let unknown = authorized(&r, register("eve", "<sip:a@h>", 2, ""), "eve", "guess", &first.response);
        let a = r.handle(&wrong, source(), Some(&acct), &[], 1000);
        let b = r.handle(&unknown, source(), None, &[], 1000);
        assert_eq!((a.auth, b.auth), (AuthOutcome::Failed, AuthOutcome::Failed));
        assert_eq!(a.response.status(), b.response.status());
        let strip = |m: &SipMessage| m.headers.iter().filter(|(n, _)| n != "WWW-Authenticate" && n != "From" && n != "To" && n != "Via" && n != "CSeq").cloned().collect::<Vec<_>>();
        assert_eq!(strip(&a.response), strip(&b.response));
    }

    #[test]
    fn stale_nonce_short_expiry_foreign_aor_and_replay() {
        let r = registrar();
        let acct = Account::from_password("ada", REALM, "pw");
        let first = r.handle(&register("ada", "<sip:a@h>", 1, ""), source(), Some(&acct), &[], 1000);
        let req = authorized(&r, register("ada", "<sip:a@h>", 2, ""), "ada", "pw", &first.response);
        let stale = r.handle(&req, source(), Some(&acct), &[], 2000);
        assert_eq!(stale.auth, AuthOutcome::Stale);
        assert!(stale.response.header("WWW-Authenticate").unwrap().contains("stale=true"));

        let req = authorized(&r, register("ada", "<sip:a@h>;expires=10", 2, ""), "ada", "pw", &first.response);
        let brief = r.handle(&req, source(), Some(&acct), &[], 1000);
        assert_eq!(brief.response.status(), Some(423));
        assert_eq!(brief.response.header("Min-Expires"), Some("60"));

        let mut foreign = register("bob", "<sip:a@h>", 2, "");
        foreign = authorized(&r, foreign, "ada", "pw", &first.response);
        assert_eq!(r.handle(&foreign, source(), Some(&acct), &[], 1000).response.status(), Some(403));

        let existing = Binding { contact: "sip:a@h".into(), expires_at: 5000, call_id: "reg-1".into(), cseq: 5, source: source() };
        let req = authorized(&r, register("ada", "<sip:a@h>", 4, ""), "ada", "pw", &first.response);
        assert_eq!(r.handle(&req, source(), Some(&acct), &[existing], 1000).response.status(), Some(500));
    }
}
