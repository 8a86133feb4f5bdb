//! The directory: who can be called and where they ring.
//!
//! Provisioning data lives in tables of the shared store: users (an agent,
//! optionally linked to the Salesforce user who owns their calls), devices
//! (SIP endpoints a user's calls ring, each a contact URI), groups (users
//! rung all at once, in a set order), and numbers (DIDs routed to a user or
//! to a group; one of them may be the company main line). The admin API and
//! `switchboard admin` write it; the call core reads it through
//! [`Directory::route_number`] when a call arrives from a trunk,
//! [`Directory::route_extension`] when a user dials an extension, and
//! [`Directory::entitled_numbers`] to check the caller ID an agent presents.
//!
//! Numbers and groups also carry the administrators' auto-recording policy
//! (F7, "record all calls"): [`Directory::set_number_recording_policy`] and
//! [`Directory::set_group_recording_policy`] switch it, and every route says
//! in [`NumberRoute::admin_recording`] whether the call must be recorded for
//! admins only, so the call core needs no second lookup.
//!
//! Every value is validated here, once, so both writers reject the same bad
//! input with the same message, and the call core can trust what it reads.
//! Rules no single constraint can hold are checked here too: extensions are
//! unique across users and groups together.

use std::collections::BTreeSet;
use std::net::Ipv6Addr;

use serde::{Deserialize, Serialize};
use switchboard_store::sqlx::{self, any::AnyRow, Row};
use switchboard_store::{now_ms, Database};

/// Shortest number, in digits after the `+`, accepted as a DID.
const NUMBER_MIN_DIGITS: usize = 3;
/// Longest number, in digits after the `+` (the E.164 maximum).
const NUMBER_MAX_DIGITS: usize = 15;
/// Longest extension, in digits.
const EXTENSION_MAX_DIGITS: usize = 15;
/// Longest user or device name, in characters.
const NAME_MAX_CHARS: usize = 200;
/// Longest contact URI, in bytes.
const CONTACT_URI_MAX_BYTES: usize = 1024;

/// Why a directory operation failed. The admin API maps the variants to HTTP
/// statuses (400, 404, 409, 500) and the CLI prints the message as it is, so
/// every message says what was wrong and what is expected.
#[derive(Debug, thiserror::Error)]
pub enum DirectoryError {
    /// A value is malformed; `field` names it as the API and CLI spell it.
    #[error("invalid {field}: {message}")]
    Invalid {
        /// The field, e.g. `contact_uri`.
        field: &'static str,
        /// What is wrong and what is expected.
        message: String,
    },
    /// The user, device, group, group member or number named in the request
    /// does not exist.
    #[error("{kind} {id:?} not found")]
    NotFound {
        /// `user`, `device`, `group`, `group member` or `number`.
        kind: &'static str,
        /// The id or number that was looked up.
        id: String,
    },
    /// The write would duplicate a value that must be unique.
    #[error("{0}")]
    Conflict(String),
    /// The database failed; the caller cannot fix this by changing the input.
    #[error("directory store error: {0}")]
    Store(#[from] sqlx::Error),
}

impl DirectoryError {
    fn invalid(field: &'static str, message: impl Into<String>) -> Self {
        Self::Invalid { field, message: message.into() }
    }

    fn not_found(kind: &'static str, id: impl Into<String>) -> Self {
        Self::NotFound { kind, id: id.into() }
    }
}

/// An agent: the person calls are routed to and whose Salesforce user owns
/// the resulting Tasks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    /// UUIDv7, so ids sort by creation time.
    pub id: String,
    /// Display name, trimmed.
    pub name: String,
    /// Internal extension other users dial, digits only; unique.
    pub extension: Option<String>,
    /// The linked Salesforce user (`005…`, 15 or 18 characters); unique.
    pub salesforce_user_id: Option<String>,
    pub role: Role,
    /// Unix epoch milliseconds.
    pub created_at: i64,
}

/// What is needed to create a [`User`]; the directory assigns id and time.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewUser {
    /// Display name; required.
    pub name: String,
    /// Digits only; optional, unique.
    #[serde(default)]
    pub extension: Option<String>,
    /// `005…`, 15 or 18 characters; optional, unique.
    #[serde(default)]
    pub salesforce_user_id: Option<String>,
    /// `agent` (the default) or `admin`.
    #[serde(default)]
    pub role: Role,
}

/// What a user may do beyond its own calls.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    #[default]
    Agent,
    /// Also sees admin-only recordings (F7) in the agent API.
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Agent => "agent",
            Role::Admin => "admin",
        }
    }

    /// The stored form; anything unknown is the least privileged role.
    pub fn parse(s: &str) -> Role {
        if s == "admin" {
            Role::Admin
        } else {
            Role::Agent
        }
    }
}

/// A SIP endpoint that rings when its user is called.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Device {
    /// UUIDv7.
    pub id: String,
    /// The owner; deleting the user deletes the device.
    pub user_id: String,
    /// A label for people, e.g. "desk phone".
    pub name: String,
    /// Where INVITEs for this device are sent, e.g. `sip:ada@192.0.2.10:5060`.
    pub contact_uri: String,
    /// Unix epoch milliseconds.
    pub created_at: i64,
}

/// What is needed to create a [`Device`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewDevice {
    /// An existing user's id.
    pub user_id: String,
    /// A label for people.
    pub name: String,
    /// A `sip:` or `sips:` URI with a host.
    pub contact_uri: String,
}

/// Users rung together: a call to the group's number or extension rings
/// every member's devices at once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Group {
    /// UUIDv7, so ids sort by creation time.
    pub id: String,
    /// Display name, trimmed, e.g. "Sales".
    pub name: String,
    /// Internal extension users dial, digits only; unique across users and
    /// groups together.
    pub extension: Option<String>,
    /// The admin auto-recording policy: every call for the group (to one of
    /// its numbers or its extension) is recorded, for admins only.
    pub record_calls: bool,
    /// Unix epoch milliseconds.
    pub created_at: i64,
}

/// What is needed to create a [`Group`]; the directory assigns id and time.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewGroup {
    /// Display name; required.
    pub name: String,
    /// Digits only; optional, unique across users and groups.
    #[serde(default)]
    pub extension: Option<String>,
}

/// A DID and the user or group it routes to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Number {
    /// Normalised: `+` followed by digits only.
    pub number: String,
    /// The owning user, if a user owns it. A number has at most one owner:
    /// a user or a group. `None` for both once the owner was deleted (the
    /// number stays provisioned but routes nowhere until assigned again).
    pub user_id: Option<String>,
    /// The owning group, if a group owns it.
    pub group_id: Option<String>,
    /// Whether this is the company main line, which every user may present
    /// as caller ID. At most one number is.
    pub main_line: bool,
    /// The admin auto-recording policy: every call to this number (and every
    /// outbound call presenting it) is recorded, for admins only. It stays
    /// with the number when the number changes owner.
    pub record_calls: bool,
    /// Unix epoch milliseconds.
    pub created_at: i64,
}

/// One entry of the company directory: a user or a group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DirectoryEntry {
    /// The user's or group's id.
    pub id: String,
    pub kind: DirectoryKind,
    pub name: String,
    /// What colleagues dial.
    pub extension: Option<String>,
    /// Its direct numbers (E.164).
    pub numbers: Vec<String>,
    /// For users: the names of their groups.
    pub groups: Vec<String>,
}

/// Whether a directory entry is a person or a group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DirectoryKind {
    User,
    Group,
}

/// One user a call rings, with the devices to ring.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// The user.
    pub user: User,
    /// The user's devices, oldest first; may be empty (the user may only
    /// answer in the browser softphone).
    pub devices: Vec<Device>,
}

/// Where a call to a number or an extension goes: the users to ring, in ring
/// order, each with their devices.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NumberRoute {
    /// The normalised number, or the extension, that matched.
    pub number: String,
    /// The group the call is for; `None` when it is for one user.
    pub group: Option<Group>,
    /// Who rings, never empty: the owning user alone, or the group's
    /// members in ring order (all of them ring at once).
    pub members: Vec<Member>,
    /// Whether the number is the company main line.
    pub main_line: bool,
    /// Whether an admin policy wants this call recorded (admin-only): the
    /// dialled number has one (the main line included), or the group the
    /// call is for has one. Always `false` for a user's extension: policies
    /// cover lines and groups, not people.
    pub admin_recording: bool,
}

/// Every admin auto-recording policy in force (`GET /recording-policies`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordingPolicies {
    /// The numbers whose calls are recorded, in lexical order.
    pub numbers: Vec<Number>,
    /// The groups whose calls are recorded, oldest first.
    pub groups: Vec<Group>,
}

/// Provisioning of users, devices, groups and numbers over the shared store.
/// Cheap to clone: it holds the connection pool.
#[derive(Debug, Clone)]
pub struct Directory {
    db: Database,
}

const USER_COLUMNS: &str = "id, name, extension, salesforce_user_id, role, created_at";
const DEVICE_COLUMNS: &str = "id, user_id, name, contact_uri, created_at";
const GROUP_COLUMNS: &str = "id, name, extension, record_calls, created_at";
const NUMBER_COLUMNS: &str = "number, user_id, group_id, main_line, record_calls, created_at";
/// [`USER_COLUMNS`] of `users u`, named as [`user_from_row`] reads them.
const USER_COLUMNS_OF_U: &str =
    "u.id AS id, u.name AS name, u.extension AS extension, u.salesforce_user_id AS salesforce_user_id, u.role AS role, u.created_at AS created_at";

impl Directory {
    /// A directory over `db`, whose schema must already be migrated.
    pub fn new(db: Database) -> Self {
        Self { db }
    }

    /// Creates a user after validating every field; an extension taken by a
    /// user or a group, or a Salesforce user id linked to another user, is a
    /// [`DirectoryError::Conflict`].
    pub async fn create_user(&self, new: NewUser) -> Result<User, DirectoryError> {
        let name = validate_name("name", &new.name)?;
        let extension = new.extension.as_deref().map(validate_extension).transpose()?;
        let salesforce_user_id = new.salesforce_user_id.as_deref().map(validate_salesforce_user_id).transpose()?;

        if let Some(ext) = &extension {
            self.check_extension_free(ext).await?;
        }
        if let Some(sf) = &salesforce_user_id {
            if let Some(owner) = self.user_id_by("salesforce_user_id", sf).await? {
                return Err(DirectoryError::Conflict(format!(
                    "Salesforce user {sf} is already linked to user {owner}"
                )));
            }
        }

        let user = User { id: new_id(), name, extension, salesforce_user_id, role: new.role, created_at: now_ms() };
        sqlx::query("INSERT INTO users (id, name, extension, salesforce_user_id, role, created_at) VALUES ($1, $2, $3, $4, $5, $6)")
            .bind(&user.id)
            .bind(&user.name)
            .bind(user.extension.clone())
            .bind(user.salesforce_user_id.clone())
            .bind(user.role.as_str())
            .bind(user.created_at)
            .execute(self.db.pool())
            .await
            .map_err(|e| {
                // A concurrent insert won the race after the checks above.
                conflict_or_store(e, "a user with this extension or Salesforce user id already exists")
            })?;
        tracing::info!(user_id = %user.id, name = %user.name, "user created");
        Ok(user)
    }

    /// Every user, oldest first.
    pub async fn list_users(&self) -> Result<Vec<User>, DirectoryError> {
        let rows = sqlx::query(&format!("SELECT {USER_COLUMNS} FROM users ORDER BY created_at, id"))
            .fetch_all(self.db.pool())
            .await?;
        rows.iter().map(user_from_row).collect()
    }

    /// One user by id.
    pub async fn get_user(&self, id: &str) -> Result<User, DirectoryError> {
        self.find_user(id).await?.ok_or_else(|| DirectoryError::not_found("user", id))
    }

    /// Deletes a user with its devices and group memberships; numbers it
    /// owned stay provisioned but unassigned, so a DID is never lost by
    /// removing a person.
    pub async fn delete_user(&self, id: &str) -> Result<(), DirectoryError> {
        let mut tx = self.db.pool().begin().await?;
        sqlx::query("DELETE FROM devices WHERE user_id = $1").bind(id).execute(&mut *tx).await?;
        sqlx::query("DELETE FROM group_members WHERE user_id = $1").bind(id).execute(&mut *tx).await?;
        sqlx::query("UPDATE numbers SET user_id = NULL WHERE user_id = $1").bind(id).execute(&mut *tx).await?;
        let deleted = sqlx::query("DELETE FROM users WHERE id = $1").bind(id).execute(&mut *tx).await?;
        if deleted.rows_affected() == 0 {
            tx.rollback().await?;
            return Err(DirectoryError::not_found("user", id));
        }
        tx.commit().await?;
        tracing::info!(user_id = %id, "user deleted");
        Ok(())
    }

    /// Adds a SIP device to an existing user.
    pub async fn create_device(&self, new: NewDevice) -> Result<Device, DirectoryError> {
        let name = validate_name("name", &new.name)?;
        let contact_uri = validate_contact_uri(&new.contact_uri)?;
        let user_id = new.user_id.trim().to_owned();
        if user_id.is_empty() {
            return Err(DirectoryError::invalid("user_id", "the id of the user who owns the device is required"));
        }
        if self.find_user(&user_id).await?.is_none() {
            return Err(DirectoryError::not_found("user", user_id));
        }
        let device = Device { id: new_id(), user_id, name, contact_uri, created_at: now_ms() };
        self.insert_device(&device)
            .await
            .map_err(|e| match &e {
                // The user was deleted between the check and the insert.
                sqlx::Error::Database(d) if d.is_foreign_key_violation() => {
                    DirectoryError::not_found("user", device.user_id.clone())
                }
                _ => DirectoryError::Store(e),
            })?;
        tracing::info!(device_id = %device.id, user_id = %device.user_id, contact = %device.contact_uri, "device created");
        Ok(device)
    }

    async fn insert_device(&self, device: &Device) -> Result<(), sqlx::Error> {
        sqlx::query("INSERT INTO devices (id, user_id, name, contact_uri, created_at) VALUES ($1, $2, $3, $4, $5)")
            .bind(&device.id)
            .bind(&device.user_id)
            .bind(&device.name)
            .bind(&device.contact_uri)
            .bind(device.created_at)
            .execute(self.db.pool())
            .await
            .map(|_| ())
    }

    /// The user's browser phone: the device its softphone pages register
    /// as (no SIP credentials, no provisioned contact; each open page is a
    /// binding), created the first time a page asks.
    pub async fn browser_device(&self, user_id: &str) -> Result<Device, DirectoryError> {
        if let Some(device) = self.list_devices(Some(user_id)).await?.into_iter().find(Device::is_browser_phone) {
            return Ok(device);
        }
        let device = Device { id: new_id(), user_id: user_id.to_owned(), name: BROWSER_DEVICE_NAME.to_owned(), contact_uri: String::new(), created_at: now_ms() };
        self.insert_device(&device).await?;
        tracing::info!(device_id = %device.id, user_id = %device.user_id, "browser phone device created");
        Ok(device)
    }

    /// Sets the digest credentials a device registers and calls with.
    /// Only H(username:realm:password) is stored, for MD5 and SHA-256.
    pub async fn set_device_credentials(&self, device_id: &str, username: &str, password: &str, realm: &str) -> Result<(), DirectoryError> {
        let username = username.trim();
        if username.is_empty() || username.len() > 64 || !username.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.!~*'()".contains(&b)) {
            return Err(DirectoryError::invalid("sip_username", "1 to 64 letters, digits or -_.!~*'()"));
        }
        if password.len() < 12 {
            return Err(DirectoryError::invalid("sip_password", "at least 12 characters"));
        }
        let account = crate::sip::registrar::Account::from_password(username, realm, password);
        let updated = sqlx::query("UPDATE devices SET sip_username = $2, ha1_md5 = $3, ha1_sha256 = $4 WHERE id = $1")
            .bind(device_id)
            .bind(username)
            .bind(&account.ha1_md5)
            .bind(&account.ha1_sha256)
            .execute(self.db.pool())
            .await
            .map_err(|e| conflict_or_store(e, &format!("another device already has the SIP username {username}")))?;
        if updated.rows_affected() == 0 {
            return Err(DirectoryError::not_found("device", device_id));
        }
        tracing::info!(device_id, sip_username = username, "device credentials set");
        Ok(())
    }

    /// Devices, oldest first: all of them, or those of one user (which must
    /// exist, so a mistyped id is an error rather than an empty list).
    pub async fn list_devices(&self, user_id: Option<&str>) -> Result<Vec<Device>, DirectoryError> {
        let rows = match user_id {
            Some(uid) => {
                if self.find_user(uid).await?.is_none() {
                    return Err(DirectoryError::not_found("user", uid));
                }
                self.devices_of(uid).await?
            }
            None => {
                sqlx::query(&format!("SELECT {DEVICE_COLUMNS} FROM devices ORDER BY created_at, id"))
                    .fetch_all(self.db.pool())
                    .await?
            }
        };
        rows.iter().map(device_from_row).collect()
    }

    /// Removes one device.
    pub async fn delete_device(&self, id: &str) -> Result<(), DirectoryError> {
        let deleted = sqlx::query("DELETE FROM devices WHERE id = $1").bind(id).execute(self.db.pool()).await?;
        if deleted.rows_affected() == 0 {
            return Err(DirectoryError::not_found("device", id));
        }
        tracing::info!(device_id = %id, "device deleted");
        Ok(())
    }

    /// Provisions `number` (normalised, see [`normalise_number`]) for a user.
    /// Idempotent for the same owner; a number another user or a group owns
    /// is a conflict (remove it first), an unassigned one is taken over.
    /// Whether it is the main line does not change.
    pub async fn assign_number(&self, number: &str, user_id: &str) -> Result<Number, DirectoryError> {
        let number = normalise_number(number)?;
        if self.find_user(user_id).await?.is_none() {
            return Err(DirectoryError::not_found("user", user_id));
        }
        self.assign(number, Owner::User(user_id)).await
    }

    /// Provisions `number` (normalised, see [`normalise_number`]) for a group,
    /// whose members all ring when it is called. Idempotent for the same
    /// group; a number a user or another group owns is a conflict (remove it
    /// first), an unassigned one is taken over. Whether it is the main line
    /// does not change.
    pub async fn assign_number_to_group(&self, number: &str, group_id: &str) -> Result<Number, DirectoryError> {
        let number = normalise_number(number)?;
        if self.find_group(group_id).await?.is_none() {
            return Err(DirectoryError::not_found("group", group_id));
        }
        self.assign(number, Owner::Group(group_id)).await
    }

    async fn assign(&self, number: String, owner: Owner<'_>) -> Result<Number, DirectoryError> {
        let (column, id) = owner.column_and_id();
        // One statement, so two concurrent assignments cannot both win; the
        // WHERE leaves a number with another owner untouched (no row back).
        let row = sqlx::query(&format!(
            "INSERT INTO numbers (number, {column}, created_at) VALUES ($1, $2, $3) \
             ON CONFLICT (number) DO UPDATE SET {column} = excluded.{column} \
             WHERE (numbers.user_id IS NULL AND numbers.group_id IS NULL) OR numbers.{column} = excluded.{column} \
             RETURNING {NUMBER_COLUMNS}"
        ))
        .bind(&number)
        .bind(id)
        .bind(now_ms())
        .fetch_optional(self.db.pool())
        .await
        .map_err(|e| match &e {
            // The owner was deleted between the check and the insert.
            sqlx::Error::Database(d) if d.is_foreign_key_violation() => DirectoryError::not_found(owner.kind(), id),
            _ => DirectoryError::Store(e),
        })?;
        match row {
            Some(row) => {
                let assigned = number_from_row(&row)?;
                tracing::info!(number = %assigned.number, owner = owner.kind(), owner_id = %id, "number assigned");
                Ok(assigned)
            }
            None => {
                let current = self.find_number(&number).await?;
                let holder = match current.as_ref().map(|n| (&n.user_id, &n.group_id)) {
                    Some((Some(user), _)) => format!("user {user}"),
                    Some((None, Some(group))) => format!("group {group}"),
                    _ => "another owner".to_owned(),
                };
                Err(DirectoryError::Conflict(format!(
                    "number {number} is assigned to {holder}; remove it before assigning it again"
                )))
            }
        }
    }

    /// Makes `number` (provisioned, in any accepted spelling) the company
    /// main line, or stops it being the main line. Setting one clears any
    /// other, in the same transaction, so there is at most one.
    pub async fn set_main_line(&self, number: &str, main_line: bool) -> Result<Number, DirectoryError> {
        let number = normalise_number(number)?;
        let concurrent = |e| {
            conflict_or_store(e, "another number was made the main line at the same time; try again")
        };
        let mut tx = self.db.pool().begin().await?;
        if main_line {
            sqlx::query("UPDATE numbers SET main_line = 0 WHERE main_line = 1 AND number <> $1")
                .bind(&number)
                .execute(&mut *tx)
                .await?;
        }
        let row = sqlx::query(&format!("UPDATE numbers SET main_line = $2 WHERE number = $1 RETURNING {NUMBER_COLUMNS}"))
            .bind(&number)
            .bind(i64::from(main_line))
            .fetch_optional(&mut *tx)
            .await
            .map_err(concurrent)?;
        let Some(row) = row else {
            tx.rollback().await?;
            return Err(DirectoryError::not_found("number", number));
        };
        let updated = number_from_row(&row)?;
        tx.commit().await.map_err(concurrent)?;
        tracing::info!(number = %updated.number, main_line, "main line set");
        Ok(updated)
    }

    /// Every provisioned number, in lexical order.
    pub async fn list_numbers(&self) -> Result<Vec<Number>, DirectoryError> {
        let rows = sqlx::query(&format!("SELECT {NUMBER_COLUMNS} FROM numbers ORDER BY number"))
            .fetch_all(self.db.pool())
            .await?;
        rows.iter().map(number_from_row).collect()
    }

    /// Deprovisions a number (given in any accepted spelling).
    pub async fn delete_number(&self, number: &str) -> Result<(), DirectoryError> {
        let number = normalise_number(number)?;
        let deleted = sqlx::query("DELETE FROM numbers WHERE number = $1").bind(&number).execute(self.db.pool()).await?;
        if deleted.rows_affected() == 0 {
            return Err(DirectoryError::not_found("number", number));
        }
        tracing::info!(number = %number, "number deleted");
        Ok(())
    }

    /// Creates a group after validating its fields; an extension taken by a
    /// user or another group is a [`DirectoryError::Conflict`].
    pub async fn create_group(&self, new: NewGroup) -> Result<Group, DirectoryError> {
        let name = validate_name("name", &new.name)?;
        let extension = new.extension.as_deref().map(validate_extension).transpose()?;
        if let Some(ext) = &extension {
            self.check_extension_free(ext).await?;
        }
        let group = Group { id: new_id(), name, extension, record_calls: false, created_at: now_ms() };
        sqlx::query("INSERT INTO groups (id, name, extension, created_at) VALUES ($1, $2, $3, $4)")
            .bind(&group.id)
            .bind(&group.name)
            .bind(group.extension.clone())
            .bind(group.created_at)
            .execute(self.db.pool())
            .await
            .map_err(|e| conflict_or_store(e, "a group with this extension already exists"))?;
        tracing::info!(group_id = %group.id, name = %group.name, "group created");
        Ok(group)
    }

    /// Every group, oldest first.
    pub async fn list_groups(&self) -> Result<Vec<Group>, DirectoryError> {
        let rows = sqlx::query(&format!("SELECT {GROUP_COLUMNS} FROM groups ORDER BY created_at, id"))
            .fetch_all(self.db.pool())
            .await?;
        rows.iter().map(group_from_row).collect()
    }

    /// One group by id.
    pub async fn get_group(&self, id: &str) -> Result<Group, DirectoryError> {
        self.find_group(id).await?.ok_or_else(|| DirectoryError::not_found("group", id))
    }

    /// Deletes a group and its memberships (the users stay); numbers it
    /// owned stay provisioned but unassigned.
    pub async fn delete_group(&self, id: &str) -> Result<(), DirectoryError> {
        let mut tx = self.db.pool().begin().await?;
        sqlx::query("DELETE FROM group_members WHERE group_id = $1").bind(id).execute(&mut *tx).await?;
        sqlx::query("UPDATE numbers SET group_id = NULL WHERE group_id = $1").bind(id).execute(&mut *tx).await?;
        let deleted = sqlx::query("DELETE FROM groups WHERE id = $1").bind(id).execute(&mut *tx).await?;
        if deleted.rows_affected() == 0 {
            tx.rollback().await?;
            return Err(DirectoryError::not_found("group", id));
        }
        tx.commit().await?;
        tracing::info!(group_id = %id, "group deleted");
        Ok(())
    }

    /// Adds a user to a group, last in ring order. Idempotent: a member
    /// keeps its place.
    pub async fn add_group_member(&self, group_id: &str, user_id: &str) -> Result<(), DirectoryError> {
        if self.find_group(group_id).await?.is_none() {
            return Err(DirectoryError::not_found("group", group_id));
        }
        if self.find_user(user_id).await?.is_none() {
            return Err(DirectoryError::not_found("user", user_id));
        }
        // The WHERE also keeps SQLite from reading ON CONFLICT as a join.
        let added = sqlx::query(
            "INSERT INTO group_members (group_id, user_id, position) \
             SELECT $1, $2, COALESCE(MAX(position), 0) + 1 FROM group_members WHERE group_id = $1 \
             ON CONFLICT (group_id, user_id) DO NOTHING",
        )
        .bind(group_id)
        .bind(user_id)
        .execute(self.db.pool())
        .await;
        match added {
            Ok(done) => {
                if done.rows_affected() > 0 {
                    tracing::info!(group_id, user_id, "group member added");
                }
                Ok(())
            }
            // The group or the user was deleted after the checks above.
            Err(sqlx::Error::Database(d)) if d.is_foreign_key_violation() => {
                if self.find_group(group_id).await?.is_none() {
                    Err(DirectoryError::not_found("group", group_id))
                } else {
                    Err(DirectoryError::not_found("user", user_id))
                }
            }
            Err(e) => Err(DirectoryError::Store(e)),
        }
    }

    /// Takes a user out of a group; the others keep their order.
    pub async fn remove_group_member(&self, group_id: &str, user_id: &str) -> Result<(), DirectoryError> {
        let deleted = sqlx::query("DELETE FROM group_members WHERE group_id = $1 AND user_id = $2")
            .bind(group_id)
            .bind(user_id)
            .execute(self.db.pool())
            .await?;
        if deleted.rows_affected() == 0 {
            if self.find_group(group_id).await?.is_none() {
                return Err(DirectoryError::not_found("group", group_id));
            }
            return Err(DirectoryError::not_found("group member", user_id));
        }
        tracing::info!(group_id, user_id, "group member removed");
        Ok(())
    }

    /// The members of a group in ring order (the order they were added).
    pub async fn group_members(&self, group_id: &str) -> Result<Vec<User>, DirectoryError> {
        if self.find_group(group_id).await?.is_none() {
            return Err(DirectoryError::not_found("group", group_id));
        }
        self.members_of(group_id).await
    }

    /// Switches the admin auto-recording policy of a provisioned `number`
    /// (in any accepted spelling; the main line is a number like the others):
    /// with `record_calls`, every call to it, and every outbound call that
    /// presents it, is recorded for admins only. Idempotent; an unprovisioned
    /// number is [`DirectoryError::NotFound`] (provision it first).
    pub async fn set_number_recording_policy(&self, number: &str, record_calls: bool) -> Result<Number, DirectoryError> {
        let number = normalise_number(number)?;
        let row = sqlx::query(&format!("UPDATE numbers SET record_calls = $2 WHERE number = $1 RETURNING {NUMBER_COLUMNS}"))
            .bind(&number)
            .bind(i64::from(record_calls))
            .fetch_optional(self.db.pool())
            .await?;
        let updated = row.as_ref().map(number_from_row).transpose()?.ok_or_else(|| DirectoryError::not_found("number", number))?;
        tracing::info!(number = %updated.number, record_calls, main_line = updated.main_line, "number recording policy set");
        Ok(updated)
    }

    /// Switches the admin auto-recording policy of a group (the group is
    /// also the call queue): with `record_calls`, every call for the group,
    /// to one of its numbers or to its extension, is recorded for admins
    /// only. Idempotent; an unknown group is [`DirectoryError::NotFound`].
    pub async fn set_group_recording_policy(&self, group_id: &str, record_calls: bool) -> Result<Group, DirectoryError> {
        let row = sqlx::query(&format!("UPDATE groups SET record_calls = $2 WHERE id = $1 RETURNING {GROUP_COLUMNS}"))
            .bind(group_id)
            .bind(i64::from(record_calls))
            .fetch_optional(self.db.pool())
            .await?;
        let updated = row.as_ref().map(group_from_row).transpose()?.ok_or_else(|| DirectoryError::not_found("group", group_id))?;
        tracing::info!(group_id = %updated.id, record_calls, "group recording policy set");
        Ok(updated)
    }

    /// The numbers and groups whose calls are recorded for admins.
    pub async fn recording_policies(&self) -> Result<RecordingPolicies, DirectoryError> {
        let numbers = sqlx::query(&format!("SELECT {NUMBER_COLUMNS} FROM numbers WHERE record_calls = 1 ORDER BY number"))
            .fetch_all(self.db.pool())
            .await?;
        let groups = sqlx::query(&format!("SELECT {GROUP_COLUMNS} FROM groups WHERE record_calls = 1 ORDER BY created_at, id"))
            .fetch_all(self.db.pool())
            .await?;
        Ok(RecordingPolicies {
            numbers: numbers.iter().map(number_from_row).collect::<Result<_, _>>()?,
            groups: groups.iter().map(group_from_row).collect::<Result<_, _>>()?,
        })
    }

    /// Whether calls on the company number `number` are recorded for admins:
    /// the number has a policy, or the group that owns it has. This is how an
    /// outbound call is judged by the caller ID it presents; calls *to* a
    /// number get the same answer in [`NumberRoute::admin_recording`].
    /// `false` for anything that is not a provisioned number.
    pub async fn admin_recording_for_number(&self, number: &str) -> Result<bool, DirectoryError> {
        let Ok(number) = normalise_number(number) else {
            return Ok(false);
        };
        let flags: Option<(i64, Option<i64>)> = sqlx::query_as(
            "SELECT n.record_calls, g.record_calls FROM numbers n LEFT JOIN groups g ON g.id = n.group_id WHERE n.number = $1",
        )
        .bind(&number)
        .fetch_optional(self.db.pool())
        .await?;
        Ok(matches!(flags, Some((own, group)) if own != 0 || group.unwrap_or(0) != 0))
    }

    /// Resolves the user part of a dialled request URI to the users to ring
    /// and their devices: the owning user, or every member of the owning
    /// group in ring order. `Ok(None)` when nothing routes: the number is not
    /// provisioned, has no owner, belongs to a group without members, or
    /// `dialled` is not a phone number at all (a name such as `alice`),
    /// which is the caller's cue to answer 404 rather than an error. The
    /// route is admin-recorded when the number or its group has a policy.
    pub async fn route_number(&self, dialled: &str) -> Result<Option<NumberRoute>, DirectoryError> {
        let Ok(number) = normalise_number(dialled) else {
            return Ok(None);
        };
        let Some(provisioned) = self.find_number(&number).await? else {
            return Ok(None);
        };
        let (group, members) = match (&provisioned.user_id, &provisioned.group_id) {
            (Some(user_id), _) => match self.find_user(user_id).await? {
                Some(user) => (None, vec![user]),
                None => return Ok(None),
            },
            (None, Some(group_id)) => match self.find_group(group_id).await? {
                Some(group) => {
                    let members = self.members_of(&group.id).await?;
                    (Some(group), members)
                }
                None => return Ok(None),
            },
            (None, None) => return Ok(None),
        };
        let admin_recording = provisioned.record_calls || group.as_ref().is_some_and(|g| g.record_calls);
        self.route_to(number, group, members, provisioned.main_line, admin_recording).await
    }

    /// Resolves an extension dialled by a user to the user or group that has
    /// it, like [`Directory::route_number`]; the route's `number` is the
    /// extension. `Ok(None)` when no user or group has it, the group has no
    /// members, or `dialled` is not an extension (digits only). A group's
    /// extension follows the group's recording policy; a user's extension
    /// is never admin-recorded.
    pub async fn route_extension(&self, dialled: &str) -> Result<Option<NumberRoute>, DirectoryError> {
        let Ok(extension) = validate_extension(dialled) else {
            return Ok(None);
        };
        let row = sqlx::query(&format!("SELECT {USER_COLUMNS} FROM users WHERE extension = $1"))
            .bind(&extension)
            .fetch_optional(self.db.pool())
            .await?;
        if let Some(row) = row {
            return self.route_to(extension, None, vec![user_from_row(&row)?], false, false).await;
        }
        let row = sqlx::query(&format!("SELECT {GROUP_COLUMNS} FROM groups WHERE extension = $1"))
            .bind(&extension)
            .fetch_optional(self.db.pool())
            .await?;
        let Some(group) = row.as_ref().map(group_from_row).transpose()? else {
            return Ok(None);
        };
        let members = self.members_of(&group.id).await?;
        let admin_recording = group.record_calls;
        self.route_to(extension, Some(group), members, false, admin_recording).await
    }

    /// The user who owns a device: who a call placed from that device is
    /// from. `Ok(None)` for an unknown device.
    pub async fn device_owner(&self, device_id: &str) -> Result<Option<User>, DirectoryError> {
        let row = sqlx::query(&format!(
            "SELECT {USER_COLUMNS_OF_U} FROM devices d JOIN users u ON u.id = d.user_id WHERE d.id = $1"
        ))
        .bind(device_id)
        .fetch_optional(self.db.pool())
        .await?;
        row.as_ref().map(user_from_row).transpose()
    }

    /// Which of `user_ids` have privacy mode on (F2, `agent_settings`; a
    /// user without settings has it off), in one query. Routing asks this
    /// once per decision for the users it may log the call for.
    pub async fn privacy_mode_users(&self, user_ids: &[&str]) -> Result<BTreeSet<String>, DirectoryError> {
        let ids: BTreeSet<&str> = user_ids.iter().copied().collect();
        if ids.is_empty() {
            return Ok(BTreeSet::new());
        }
        let placeholders: Vec<String> = (1..=ids.len()).map(|i| format!("${i}")).collect();
        let sql = format!("SELECT user_id FROM agent_settings WHERE privacy_mode <> 0 AND user_id IN ({})", placeholders.join(", "));
        let mut query = sqlx::query_scalar::<_, String>(&sql);
        for id in ids {
            query = query.bind(id);
        }
        Ok(query.fetch_all(self.db.pool()).await?.into_iter().collect())
    }

    /// Makes a user an admin or an agent again.
    pub async fn set_role(&self, user_id: &str, role: Role) -> Result<User, DirectoryError> {
        let done = sqlx::query("UPDATE users SET role = $1 WHERE id = $2").bind(role.as_str()).bind(user_id).execute(self.db.pool()).await?;
        if done.rows_affected() == 0 {
            return Err(DirectoryError::not_found("user", user_id));
        }
        self.get_user(user_id).await
    }

    /// The user linked to a Salesforce user id, given in its 15- or
    /// 18-character form (ids are stored as provisioned, in either form).
    pub async fn user_by_salesforce_id(&self, salesforce_user_id: &str) -> Result<Option<User>, DirectoryError> {
        let id = salesforce_user_id.trim();
        if id.len() < 15 || !id.is_ascii() {
            return Ok(None);
        }
        let short = &id[..15];
        let rows = sqlx::query(&format!("SELECT {USER_COLUMNS} FROM users WHERE salesforce_user_id = $1 OR salesforce_user_id LIKE $2"))
            .bind(id)
            .bind(format!("{short}%"))
            .fetch_all(self.db.pool())
            .await?;
        // LIKE is case-insensitive in SQLite: compare exactly here.
        for row in &rows {
            let user = user_from_row(row)?;
            if user.salesforce_user_id.as_deref().is_some_and(|sf| sf == id || (sf.len() >= 15 && &sf[..15] == short)) {
                return Ok(Some(user));
            }
        }
        Ok(None)
    }

    /// The company directory (F3): users and groups whose name, extension,
    /// number or (for users) group name contains `query` (case-insensitive;
    /// numbers match on digits), ordered by name then id, at most `limit`
    /// entries after the entry `after` (an entry id from an earlier page).
    /// An empty query lists everyone.
    pub async fn search(&self, query: &str, limit: usize, after: Option<&str>) -> Result<Vec<DirectoryEntry>, DirectoryError> {
        let users = self.list_users().await?;
        let groups = self.list_groups().await?;
        let numbers = self.list_numbers().await?;
        let members = sqlx::query("SELECT group_id, user_id FROM group_members").fetch_all(self.db.pool()).await?;
        let mut entries: Vec<DirectoryEntry> = Vec::with_capacity(users.len() + groups.len());
        let group_name = |id: &str| groups.iter().find(|g| g.id == id).map(|g| g.name.clone());
        for u in &users {
            let mut user_groups = Vec::new();
            for m in &members {
                if m.try_get::<String, _>("user_id")? == u.id {
                    if let Some(name) = group_name(&m.try_get::<String, _>("group_id")?) {
                        user_groups.push(name);
                    }
                }
            }
            user_groups.sort();
            entries.push(DirectoryEntry {
                id: u.id.clone(),
                kind: DirectoryKind::User,
                name: u.name.clone(),
                extension: u.extension.clone(),
                numbers: numbers.iter().filter(|n| n.user_id.as_deref() == Some(&u.id)).map(|n| n.number.clone()).collect(),
                groups: user_groups,
            });
        }
        for g in &groups {
            entries.push(DirectoryEntry {
                id: g.id.clone(),
                kind: DirectoryKind::Group,
                name: g.name.clone(),
                extension: g.extension.clone(),
                numbers: numbers.iter().filter(|n| n.group_id.as_deref() == Some(&g.id)).map(|n| n.number.clone()).collect(),
                groups: Vec::new(),
            });
        }
        let q = query.trim().to_lowercase();
        let digits: String = q.chars().filter(char::is_ascii_digit).collect();
        entries.retain(|e| {
            q.is_empty()
                || e.name.to_lowercase().contains(&q)
                || e.extension.as_deref().is_some_and(|x| !digits.is_empty() && x.contains(&digits))
                || e.numbers.iter().any(|n| digits.len() >= 3 && n.contains(&digits))
                || e.groups.iter().any(|g| g.to_lowercase().contains(&q))
        });
        entries.sort_by(|a, b| a.name.to_lowercase().cmp(&b.name.to_lowercase()).then_with(|| a.id.cmp(&b.id)));
        let start = match after {
            Some(id) => entries.iter().position(|e| e.id == id).map_or(entries.len(), |i| i + 1),
            None => 0,
        };
        Ok(entries.into_iter().skip(start).take(limit).collect())
    }

    /// The numbers a user may present as caller ID, without repeats: the
    /// user's own numbers (oldest first), then the numbers of every group
    /// the user is a member of (groups oldest first), then the main line.
    /// An unknown user is [`DirectoryError::NotFound`].
    pub async fn entitled_numbers(&self, user_id: &str) -> Result<Vec<String>, DirectoryError> {
        if self.find_user(user_id).await?.is_none() {
            return Err(DirectoryError::not_found("user", user_id));
        }
        let own: Vec<String> = sqlx::query_scalar("SELECT number FROM numbers WHERE user_id = $1 ORDER BY created_at, number")
            .bind(user_id)
            .fetch_all(self.db.pool())
            .await?;
        let of_groups: Vec<String> = sqlx::query_scalar(
            "SELECT n.number AS number FROM group_members m \
             JOIN groups g ON g.id = m.group_id \
             JOIN numbers n ON n.group_id = g.id \
             WHERE m.user_id = $1 \
             ORDER BY g.created_at, g.id, n.created_at, n.number",
        )
        .bind(user_id)
        .fetch_all(self.db.pool())
        .await?;
        let main_line: Option<String> = sqlx::query_scalar("SELECT number FROM numbers WHERE main_line = 1")
            .fetch_optional(self.db.pool())
            .await?;
        let mut entitled: Vec<String> = Vec::with_capacity(own.len() + of_groups.len() + 1);
        for number in own.into_iter().chain(of_groups).chain(main_line) {
            if !entitled.contains(&number) {
                entitled.push(number);
            }
        }
        Ok(entitled)
    }

    /// The caller ID a user presents when it asks for none: the first of
    /// [`Directory::entitled_numbers`]; `None` when the user is entitled to
    /// no number.
    pub async fn default_caller_id(&self, user_id: &str) -> Result<Option<String>, DirectoryError> {
        Ok(self.entitled_numbers(user_id).await?.into_iter().next())
    }

    /// A route to `members` with their devices, or `None` when nobody rings.
    async fn route_to(
        &self,
        number: String,
        group: Option<Group>,
        members: Vec<User>,
        main_line: bool,
        admin_recording: bool,
    ) -> Result<Option<NumberRoute>, DirectoryError> {
        if members.is_empty() {
            return Ok(None);
        }
        let mut ringing = Vec::with_capacity(members.len());
        for user in members {
            let devices = self.devices_of(&user.id).await?.iter().map(device_from_row).collect::<Result<_, _>>()?;
            ringing.push(Member { user, devices });
        }
        Ok(Some(NumberRoute { number, group, members: ringing, main_line, admin_recording }))
    }

    /// Fails with a [`DirectoryError::Conflict`] naming the holder when a
    /// user or a group already has `extension`. Extensions share one
    /// namespace across both tables, which no constraint can hold; a race
    /// between two creations with the same extension, one a user and one a
    /// group, is not caught.
    async fn check_extension_free(&self, extension: &str) -> Result<(), DirectoryError> {
        if let Some(user) = self.user_id_by("extension", extension).await? {
            return Err(DirectoryError::Conflict(format!("extension {extension} is already taken by user {user}")));
        }
        let group: Option<String> = sqlx::query_scalar("SELECT id FROM groups WHERE extension = $1")
            .bind(extension)
            .fetch_optional(self.db.pool())
            .await?;
        if let Some(group) = group {
            return Err(DirectoryError::Conflict(format!("extension {extension} is already taken by group {group}")));
        }
        Ok(())
    }

    async fn find_group(&self, id: &str) -> Result<Option<Group>, DirectoryError> {
        let row = sqlx::query(&format!("SELECT {GROUP_COLUMNS} FROM groups WHERE id = $1"))
            .bind(id)
            .fetch_optional(self.db.pool())
            .await?;
        row.as_ref().map(group_from_row).transpose()
    }

    async fn find_number(&self, number: &str) -> Result<Option<Number>, DirectoryError> {
        let row = sqlx::query(&format!("SELECT {NUMBER_COLUMNS} FROM numbers WHERE number = $1"))
            .bind(number)
            .fetch_optional(self.db.pool())
            .await?;
        row.as_ref().map(number_from_row).transpose()
    }

    /// The members of a group in ring order; ties (not made by this code)
    /// are broken by user id.
    async fn members_of(&self, group_id: &str) -> Result<Vec<User>, DirectoryError> {
        let rows = sqlx::query(&format!(
            "SELECT {USER_COLUMNS_OF_U} FROM group_members m JOIN users u ON u.id = m.user_id \
             WHERE m.group_id = $1 ORDER BY m.position, u.id"
        ))
        .bind(group_id)
        .fetch_all(self.db.pool())
        .await?;
        rows.iter().map(user_from_row).collect()
    }

    async fn find_user(&self, id: &str) -> Result<Option<User>, DirectoryError> {
        let row = sqlx::query(&format!("SELECT {USER_COLUMNS} FROM users WHERE id = $1"))
            .bind(id)
            .fetch_optional(self.db.pool())
            .await?;
        row.as_ref().map(user_from_row).transpose()
    }

    /// The id of the user whose `column` (a fixed column name, never input)
    /// equals `value`.
    async fn user_id_by(&self, column: &'static str, value: &str) -> Result<Option<String>, DirectoryError> {
        Ok(sqlx::query_scalar(&format!("SELECT id FROM users WHERE {column} = $1"))
            .bind(value)
            .fetch_optional(self.db.pool())
            .await?)
    }

    async fn devices_of(&self, user_id: &str) -> Result<Vec<AnyRow>, DirectoryError> {
        Ok(sqlx::query(&format!("SELECT {DEVICE_COLUMNS} FROM devices WHERE user_id = $1 ORDER BY created_at, id"))
            .bind(user_id)
            .fetch_all(self.db.pool())
            .await?)
    }
}

/// Who a number is assigned to.
#[derive(Clone, Copy)]
enum Owner<'a> {
    User(&'a str),
    Group(&'a str),
}

impl Owner<'_> {
    /// The `numbers` column holding this kind of owner, and the owner's id.
    fn column_and_id(&self) -> (&'static str, &str) {
        match self {
            Owner::User(id) => ("user_id", id),
            Owner::Group(id) => ("group_id", id),
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            Owner::User(_) => "user",
            Owner::Group(_) => "group",
        }
    }
}

impl Device {
    /// The user's browser phone (softphone pages), see
    /// [`Directory::browser_device`].
    pub fn is_browser_phone(&self) -> bool {
        self.name == BROWSER_DEVICE_NAME && self.contact_uri.is_empty()
    }
}

/// The name of every user's browser phone device.
pub const BROWSER_DEVICE_NAME: &str = "Browser phone";

fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

fn conflict_or_store(e: sqlx::Error, message: &str) -> DirectoryError {
    match &e {
        sqlx::Error::Database(d) if d.is_unique_violation() => DirectoryError::Conflict(message.to_owned()),
        _ => DirectoryError::Store(e),
    }
}

fn user_from_row(row: &AnyRow) -> Result<User, DirectoryError> {
    Ok(User {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        extension: row.try_get("extension")?,
        salesforce_user_id: row.try_get("salesforce_user_id")?,
        role: Role::parse(&row.try_get::<String, _>("role")?),
        created_at: row.try_get("created_at")?,
    })
}

fn device_from_row(row: &AnyRow) -> Result<Device, DirectoryError> {
    Ok(Device {
        id: row.try_get("id")?,
        user_id: row.try_get("user_id")?,
        name: row.try_get("name")?,
        contact_uri: row.try_get("contact_uri")?,
        created_at: row.try_get("created_at")?,
    })
}

fn group_from_row(row: &AnyRow) -> Result<Group, DirectoryError> {
    Ok(Group {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        extension: row.try_get("extension")?,
        record_calls: row.try_get::<i64, _>("record_calls")? != 0,
        created_at: row.try_get("created_at")?,
    })
}

fn number_from_row(row: &AnyRow) -> Result<Number, DirectoryError> {
    Ok(Number {
        number: row.try_get("number")?,
        user_id: row.try_get("user_id")?,
        group_id: row.try_get("group_id")?,
        main_line: row.try_get::<i64, _>("main_line")? != 0,
        record_calls: row.try_get::<i64, _>("record_calls")? != 0,
        created_at: row.try_get("created_at")?,
    })
}

/// Trims a display name and checks it is non-empty, printable and not huge.
fn validate_name(field: &'static str, raw: &str) -> Result<String, DirectoryError> {
    let name = raw.trim();
    if name.is_empty() {
        return Err(DirectoryError::invalid(field, "must not be empty"));
    }
    if name.chars().count() > NAME_MAX_CHARS {
        return Err(DirectoryError::invalid(field, format!("at most {NAME_MAX_CHARS} characters")));
    }
    if name.chars().any(char::is_control) {
        return Err(DirectoryError::invalid(field, "must not contain control characters"));
    }
    Ok(name.to_owned())
}

/// Extensions are what users dial internally: digits only.
fn validate_extension(raw: &str) -> Result<String, DirectoryError> {
    let ext = raw.trim();
    if ext.is_empty() || ext.len() > EXTENSION_MAX_DIGITS || !ext.bytes().all(|b| b.is_ascii_digit()) {
        return Err(DirectoryError::invalid(
            "extension",
            format!("{raw:?} is not an extension: use 1 to {EXTENSION_MAX_DIGITS} digits, e.g. 101"),
        ));
    }
    Ok(ext.to_owned())
}

/// Salesforce record ids are 15 (case-sensitive) or 18 (case-safe)
/// alphanumeric characters; the key prefix of the User object is `005`.
pub fn validate_salesforce_user_id(raw: &str) -> Result<String, DirectoryError> {
    let id = raw.trim();
    let well_formed =
        matches!(id.len(), 15 | 18) && id.bytes().all(|b| b.is_ascii_alphanumeric()) && id.starts_with("005");
    if !well_formed {
        return Err(DirectoryError::invalid(
            "salesforce_user_id",
            format!("{raw:?} is not a Salesforce user id: expected 15 or 18 letters and digits starting with 005"),
        ));
    }
    Ok(id.to_owned())
}

/// Accepts `sip:` and `sips:` URIs with a host (name, IPv4 or `[IPv6]`), an
/// optional user part, port and parameters; returns the trimmed URI with the
/// scheme in lower case.
pub fn validate_contact_uri(raw: &str) -> Result<String, DirectoryError> {
    let bad = |why: &str| {
        DirectoryError::invalid(
            "contact_uri",
            format!("{raw:?} is not a SIP contact: {why} (expected e.g. sip:ada@192.0.2.10:5060)"),
        )
    };
    let uri = raw.trim();
    if uri.len() > CONTACT_URI_MAX_BYTES {
        return Err(bad("too long"));
    }
    if uri.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(bad("contains spaces or control characters"));
    }
    let (scheme, rest) = uri.split_once(':').ok_or_else(|| bad("no scheme"))?;
    let scheme = scheme.to_ascii_lowercase();
    if scheme != "sip" && scheme != "sips" {
        return Err(bad("the scheme must be sip or sips"));
    }
    // The host part ends where parameters (;) or headers (?) begin.
    let end = rest.find([';', '?']).unwrap_or(rest.len());
    let address = &rest[..end];
    let hostport = match address.rsplit_once('@') {
        Some(("", _)) => return Err(bad("empty user part before @")),
        Some((_, hostport)) => hostport,
        None => address,
    };
    let (host_ok, port) = if let Some(after_bracket) = hostport.strip_prefix('[') {
        let (v6, tail) = after_bracket.split_once(']').ok_or_else(|| bad("unclosed [ in IPv6 host"))?;
        let port = match tail {
            "" => None,
            t => Some(t.strip_prefix(':').ok_or_else(|| bad("unexpected text after the IPv6 host"))?),
        };
        (v6.parse::<Ipv6Addr>().is_ok(), port)
    } else {
        match hostport.split_once(':') {
            Some((host, port)) => (is_hostname(host), Some(port)),
            None => (is_hostname(hostport), None),
        }
    };
    if hostport.is_empty() {
        return Err(bad("no host"));
    }
    if !host_ok {
        return Err(bad("the host is not a valid name or IP address"));
    }
    if let Some(port) = port {
        match port.parse::<u16>() {
            Ok(p) if p > 0 => {}
            _ => return Err(bad("the port must be a number from 1 to 65535")),
        }
    }
    Ok(format!("{scheme}:{rest}"))
}

/// A DNS name or dotted IPv4 address: dot-separated labels of letters,
/// digits and inner hyphens.
fn is_hostname(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// Brings a phone number to the one spelling the directory stores and
/// matches: `+` and digits. Spaces, dashes, dots and parentheses are dropped,
/// a leading international `00` becomes `+`, and a number without `+` gets
/// one. Anything else (letters, a second `+`, too few or too many digits) is
/// an error.
pub fn normalise_number(raw: &str) -> Result<String, DirectoryError> {
    let compact: String = raw.trim().chars().filter(|c| !matches!(c, ' ' | '-' | '.' | '(' | ')')).collect();
    let digits = if let Some(d) = compact.strip_prefix('+') {
        d
    } else if let Some(d) = compact.strip_prefix("00") {
        d
    } else {
        compact.as_str()
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(DirectoryError::invalid(
            "number",
            format!("{raw:?} is not a phone number: expected digits with an optional leading + or 00, e.g. +1 415 555 0100"),
        ));
    }
    if !(NUMBER_MIN_DIGITS..=NUMBER_MAX_DIGITS).contains(&digits.len()) {
        return Err(DirectoryError::invalid(
            "number",
            format!("{raw:?} has {} digits; a number has {NUMBER_MIN_DIGITS} to {NUMBER_MAX_DIGITS}", digits.len()),
        ));
    }
    Ok(format!("+{digits}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_normalised() {
        assert_eq!(normalise_number("+1 (415) 555-0100").unwrap(), "+14155550100");
        assert_eq!(normalise_number("0044 20.7946.0000").unwrap(), "+442079460000");
        assert_eq!(normalise_number("14155550100").unwrap(), "+14155550100");
        assert_eq!(normalise_number("  +33-1-23-45-67-89 ").unwrap(), "+33123456789");
    }

    #[test]
    fn bad_numbers_are_rejected_with_the_reason() {
        for bad in ["", "+", "alice", "+1 415 CALL-NOW", "++14155550100", "+12", "+1234567890123456", "0x41"] {
            let err = normalise_number(bad).unwrap_err();
            assert!(matches!(err, DirectoryError::Invalid { field: "number", .. }), "{bad:?}: {err}");
        }
        let err = normalise_number("+12").unwrap_err().to_string();
        assert!(err.contains("2 digits"), "{err}");
    }

    #[test]
    fn salesforce_user_ids_are_checked() {
        assert_eq!(validate_salesforce_user_id("005000000000001").unwrap(), "005000000000001");
        assert_eq!(validate_salesforce_user_id("005Dn000001AbCdEFG").unwrap(), "005Dn000001AbCdEFG");
        for bad in ["", "005", "00500000000000", "0050000000000012", "001000000000001", "005-00000000001", "005Dn000001AbCdEF_"] {
            let err = validate_salesforce_user_id(bad).unwrap_err();
            assert!(err.to_string().contains("starting with 005"), "{bad:?}: {err}");
        }
    }

    #[test]
    fn contact_uris_are_checked() {
        for good in [
            "sip:ada@127.0.0.1:5090",
            "sip:127.0.0.1",
            "SIPS:ada@pbx.example.com;transport=tcp",
            "sip:ada@[2001:db8::1]:5060",
            "sip:ada@host-1.example.com?subject=x",
        ] {
            assert!(validate_contact_uri(good).is_ok(), "{good}");
        }
        assert_eq!(validate_contact_uri(" SIP:ada@h ").unwrap(), "sip:ada@h");
        for bad in [
            "",
            "ada@127.0.0.1",
            "http://127.0.0.1",
            "sip:",
            "sip:ada@",
            "sip:@host",
            "sip:ada@host:0",
            "sip:ada@host:99999",
            "sip:ada@host:abc",
            "sip:ada@-host",
            "sip:ada@[2001:db8::1",
            "sip:ada@[zz]",
            "sip:ada @host",
            "tel:+14155550100",
        ] {
            let err = validate_contact_uri(bad).unwrap_err();
            assert!(matches!(err, DirectoryError::Invalid { field: "contact_uri", .. }), "{bad:?}: {err}");
        }
    }

    #[test]
    fn extensions_and_names_are_checked() {
        assert_eq!(validate_extension(" 101 ").unwrap(), "101");
        assert!(validate_extension("").is_err());
        assert!(validate_extension("10a").is_err());
        assert_eq!(validate_name("name", "  Ada  ").unwrap(), "Ada");
        assert!(validate_name("name", "   ").is_err());
        assert!(validate_name("name", "Ada\nLovelace").is_err());
        assert!(validate_name("name", &"x".repeat(NAME_MAX_CHARS + 1)).is_err());
    }
}
