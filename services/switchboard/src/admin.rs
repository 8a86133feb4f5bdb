//! `switchboard admin`: provisioning straight against the configured
//! database through the gateway's [`Directory`], so it works before any
//! role runs and applies exactly the validation the admin HTTP API applies.
//!
//! Output is a readable table, or with `--json` the same JSON objects the
//! admin API returns, for scripts.

use std::collections::HashMap;

use serde::Serialize;
use switchboard_gateway::api::admin::{DeviceList, GroupDetail, GroupList, NumberList, UserList};
use switchboard_gateway::directory::{
    normalise_number, Device, Directory, DirectoryError, Group, NewDevice, NewGroup, NewUser, Number, RecordingPolicies,
    Role, User,
};

use crate::cli::{
    AdminArgs, AdminCommand, DeviceCommand, GroupCommand, GroupMemberCommand, NumberCommand, PolicyTarget,
    RecordingPolicyCommand, UserCommand,
};
use crate::config::Config;
use crate::roles::open_migrated_database;

/// What `remove --json` prints.
#[derive(Debug, Serialize)]
struct Removed<'a> {
    removed: RemovedItem<'a>,
}

#[derive(Debug, Serialize)]
struct RemovedItem<'a> {
    kind: &'a str,
    id: String,
}

/// Runs one `admin` subcommand and prints its result.
pub async fn run(config: &Config, args: AdminArgs) -> anyhow::Result<()> {
    let db = open_migrated_database(config).await?;
    let directory = Directory::new(db.clone());
    let result = execute(&directory, &config.sip.realm, args.command, args.json).await;
    db.close().await;
    result
}

async fn execute(dir: &Directory, realm: &str, command: AdminCommand, json: bool) -> anyhow::Result<()> {
    match command {
        AdminCommand::User { command } => match command {
            UserCommand::Add { name, extension, salesforce_user_id, admin } => {
                let role = if admin { Role::Admin } else { Role::Agent };
                let user = dir.create_user(NewUser { name, extension, salesforce_user_id, role }).await?;
                output(json, &user, || users_table(std::slice::from_ref(&user)))
            }
            UserCommand::Role { id, role } => {
                let user = dir.set_role(&id, Role::parse(&role)).await?;
                output(json, &user, || users_table(std::slice::from_ref(&user)))
            }
            UserCommand::List => {
                let users = dir.list_users().await?;
                output(json, &UserList { users: users.clone() }, || users_table(&users))
            }
            UserCommand::Remove { id } => {
                dir.delete_user(&id).await?;
                removed(json, "user", id)
            }
        },
        AdminCommand::Device { command } => match command {
            DeviceCommand::Add { user, name, contact } => {
                let device = dir.create_device(NewDevice { user_id: user, name, contact_uri: contact }).await?;
                output(json, &device, || devices_table(std::slice::from_ref(&device)))
            }
            DeviceCommand::List { user } => {
                let devices = dir.list_devices(user.as_deref()).await?;
                output(json, &DeviceList { devices: devices.clone() }, || devices_table(&devices))
            }
            DeviceCommand::Remove { id } => {
                dir.delete_device(&id).await?;
                removed(json, "device", id)
            }
            DeviceCommand::Credentials { id, username, password, password_stdin } => {
                let password = match (password, password_stdin) {
                    (Some(p), _) => p,
                    (None, _) => {
                        let mut line = String::new();
                        std::io::stdin().read_line(&mut line)?;
                        line.trim_end_matches(['\r', '\n']).to_owned()
                    }
                };
                dir.set_device_credentials(&id, &username, &password, realm).await?;
                let done = serde_json::json!({"device_id": id, "sip_username": username, "realm": realm});
                output(json, &done, || format!("device {id} registers as {username} in realm {realm}\n"))
            }
        },
        AdminCommand::Group { command } => match command {
            GroupCommand::Add { name, extension } => {
                let group = dir.create_group(NewGroup { name, extension }).await?;
                output(json, &group, || groups_table(&[(group.clone(), Vec::new())]))
            }
            GroupCommand::List => {
                let groups = dir.list_groups().await?;
                let mut with_members = Vec::with_capacity(groups.len());
                for group in &groups {
                    with_members.push((group.clone(), dir.group_members(&group.id).await?));
                }
                output(json, &GroupList { groups }, || groups_table(&with_members))
            }
            GroupCommand::Remove { id } => {
                dir.delete_group(&id).await?;
                removed(json, "group", id)
            }
            GroupCommand::Member { command } => match command {
                GroupMemberCommand::Add { group, user } => {
                    dir.add_group_member(&group, &user).await?;
                    print_members(dir, json, &group).await
                }
                GroupMemberCommand::List { group } => print_members(dir, json, &group).await,
                GroupMemberCommand::Remove { group, user } => {
                    dir.remove_group_member(&group, &user).await?;
                    removed(json, "group member", user)
                }
            },
        },
        AdminCommand::Number { command } => match command {
            NumberCommand::Add { number, user, group, main_line } => {
                let mut assigned = match (user, group) {
                    (Some(user), None) => dir.assign_number(&number, &user).await?,
                    (None, Some(group)) => dir.assign_number_to_group(&number, &group).await?,
                    // The command line requires exactly one of them.
                    _ => anyhow::bail!("give --user or --group: the user or group the number routes to"),
                };
                if main_line {
                    assigned = dir.set_main_line(&assigned.number, true).await?;
                }
                let names = owner_names(dir).await?;
                output(json, &assigned, || numbers_table(std::slice::from_ref(&assigned), &names))
            }
            NumberCommand::List => {
                let numbers = dir.list_numbers().await?;
                let names = owner_names(dir).await?;
                output(json, &NumberList { numbers: numbers.clone() }, || numbers_table(&numbers, &names))
            }
            NumberCommand::Remove { number } => {
                let normalised = normalise_number(&number)?;
                dir.delete_number(&normalised).await?;
                removed(json, "number", normalised)
            }
        },
        AdminCommand::RecordingPolicy { command } => match command {
            RecordingPolicyCommand::Set(target) => set_recording_policy(dir, json, target, true).await,
            RecordingPolicyCommand::Clear(target) => set_recording_policy(dir, json, target, false).await,
            RecordingPolicyCommand::List => {
                let policies = dir.recording_policies().await?;
                let names = owner_names(dir).await?;
                output(json, &policies, || policies_table(&policies, &names))
            }
        },
    }
}

/// Switches the policy of one number or group and says what now holds; as
/// JSON, the number or the group as the admin API answers the same `PUT`.
async fn set_recording_policy(dir: &Directory, json: bool, target: PolicyTarget, record_calls: bool) -> anyhow::Result<()> {
    let verdict = if record_calls { "recorded for admins only" } else { "no longer recorded for admins" };
    match (target.number, target.group) {
        (Some(number), None) => {
            let number = dir.set_number_recording_policy(&number, record_calls).await?;
            let what = if number.main_line { format!("number {} (the main line)", number.number) } else { format!("number {}", number.number) };
            let sentence = format!("calls on {what} are {verdict}\n");
            output(json, &number, || sentence)
        }
        (None, Some(group)) => {
            let group = find_group(dir, &group).await?;
            let group = dir.set_group_recording_policy(&group.id, record_calls).await?;
            let sentence = format!("calls for group {} ({}) are {verdict}\n", group.name, group.id);
            let members = dir.group_members(&group.id).await?;
            output(json, &GroupDetail { group, members }, || sentence)
        }
        // The command line requires exactly one of them.
        _ => anyhow::bail!("give --number or --group: the number or group whose calls are recorded"),
    }
}

/// A group by id, or else by name (ignoring case) when exactly one group
/// has that name.
async fn find_group(dir: &Directory, id_or_name: &str) -> anyhow::Result<Group> {
    match dir.get_group(id_or_name).await {
        Ok(group) => return Ok(group),
        Err(DirectoryError::NotFound { .. }) => {}
        Err(e) => return Err(e.into()),
    }
    let wanted = id_or_name.trim();
    let mut named: Vec<Group> = dir.list_groups().await?.into_iter().filter(|g| g.name.eq_ignore_ascii_case(wanted)).collect();
    match named.len() {
        0 => anyhow::bail!("no group has the id or name {id_or_name:?}; `switchboard admin group list` shows them"),
        1 => Ok(named.remove(0)),
        n => {
            let ids: Vec<&str> = named.iter().map(|g| g.id.as_str()).collect();
            anyhow::bail!("{n} groups are named {wanted:?} ({}); give the id of the one you mean", ids.join(", "))
        }
    }
}

/// Prints a group's members in ring order; as JSON, the group as the admin
/// API's `GET /groups/{id}` answers it.
async fn print_members(dir: &Directory, json: bool, group_id: &str) -> anyhow::Result<()> {
    let group = dir.get_group(group_id).await?;
    let members = dir.group_members(group_id).await?;
    let table = members_table(&group, &members);
    output(json, &GroupDetail { group, members }, || table)
}

/// Names of the users and of the groups that may own numbers.
struct OwnerNames {
    users: HashMap<String, String>,
    groups: HashMap<String, String>,
}

async fn owner_names(dir: &Directory) -> anyhow::Result<OwnerNames> {
    Ok(OwnerNames {
        users: dir.list_users().await?.into_iter().map(|u| (u.id, u.name)).collect(),
        groups: dir.list_groups().await?.into_iter().map(|g| (g.id, g.name)).collect(),
    })
}

fn output<T: Serialize>(json: bool, value: &T, table: impl FnOnce() -> String) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(value)?);
    } else {
        print!("{}", table());
    }
    Ok(())
}

fn removed(json: bool, kind: &str, id: String) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(&Removed { removed: RemovedItem { kind, id } })?);
    } else {
        println!("removed {kind} {id}");
    }
    Ok(())
}

fn users_table(users: &[User]) -> String {
    let rows = users
        .iter()
        .map(|u| {
            vec![
                u.id.clone(),
                u.name.clone(),
                u.extension.clone().unwrap_or_default(),
                u.salesforce_user_id.clone().unwrap_or_default(),
                u.role.as_str().to_owned(),
                time(u.created_at),
            ]
        })
        .collect::<Vec<_>>();
    table(&["ID", "NAME", "EXTENSION", "SALESFORCE USER", "ROLE", "CREATED"], &rows, "no users")
}

fn devices_table(devices: &[Device]) -> String {
    let rows = devices
        .iter()
        .map(|d| vec![d.id.clone(), d.user_id.clone(), d.name.clone(), d.contact_uri.clone(), time(d.created_at)])
        .collect::<Vec<_>>();
    table(&["ID", "USER", "NAME", "CONTACT", "CREATED"], &rows, "no devices")
}

fn groups_table(groups: &[(Group, Vec<User>)]) -> String {
    let rows = groups
        .iter()
        .map(|(g, members)| {
            let names: Vec<&str> = members.iter().map(|u| u.name.as_str()).collect();
            vec![
                g.id.clone(),
                g.name.clone(),
                g.extension.clone().unwrap_or_default(),
                names.join(", "),
                yes(g.record_calls),
                time(g.created_at),
            ]
        })
        .collect::<Vec<_>>();
    table(&["ID", "NAME", "EXTENSION", "MEMBERS", "ADMIN RECORDING", "CREATED"], &rows, "no groups")
}

fn members_table(group: &Group, members: &[User]) -> String {
    let rows = members
        .iter()
        .enumerate()
        .map(|(i, u)| vec![(i + 1).to_string(), u.id.clone(), u.name.clone(), u.extension.clone().unwrap_or_default()])
        .collect::<Vec<_>>();
    table(&["ORDER", "USER", "NAME", "EXTENSION"], &rows, &format!("group {} has no members", group.name))
}

fn policies_table(policies: &RecordingPolicies, names: &OwnerNames) -> String {
    let numbers = policies.numbers.iter().map(|n| {
        let owner = match (&n.user_id, &n.group_id) {
            (Some(id), _) => format!("user {}", names.users.get(id).map_or(id.as_str(), String::as_str)),
            (None, Some(id)) => format!("group {}", names.groups.get(id).map_or(id.as_str(), String::as_str)),
            (None, None) => "(unassigned)".to_owned(),
        };
        vec!["number".to_owned(), n.number.clone(), owner, yes(n.main_line)]
    });
    let groups = policies
        .groups
        .iter()
        .map(|g| vec!["group".to_owned(), g.id.clone(), format!("group {}", g.name), String::new()]);
    let rows = numbers.chain(groups).collect::<Vec<_>>();
    table(&["SCOPE", "NUMBER OR GROUP ID", "ROUTES TO", "MAIN LINE"], &rows, "no recording policies")
}

fn numbers_table(numbers: &[Number], names: &OwnerNames) -> String {
    let rows = numbers
        .iter()
        .map(|n| {
            let (owner, name) = match (&n.user_id, &n.group_id) {
                (Some(id), _) => (format!("user {id}"), names.users.get(id).cloned().unwrap_or_default()),
                (None, Some(id)) => (format!("group {id}"), names.groups.get(id).cloned().unwrap_or_default()),
                (None, None) => ("(unassigned)".to_owned(), String::new()),
            };
            vec![n.number.clone(), owner, name, yes(n.main_line), yes(n.record_calls), time(n.created_at)]
        })
        .collect::<Vec<_>>();
    table(&["NUMBER", "OWNER", "OWNER NAME", "MAIN LINE", "ADMIN RECORDING", "CREATED"], &rows, "no numbers")
}

/// A flag as a table cell: `yes`, or empty.
fn yes(flag: bool) -> String {
    if flag { "yes" } else { "" }.to_owned()
}

/// Epoch milliseconds as a UTC timestamp.
fn time(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_else(|| ms.to_string())
}

/// Left-aligned columns, two spaces apart, headed by `header`.
pub(crate) fn table(header: &[&str], rows: &[Vec<String>], empty: &str) -> String {
    if rows.is_empty() {
        return format!("{empty}\n");
    }
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        format!("{}\n", padded.join("  ").trim_end())
    };
    let mut out = line(header.to_vec());
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_columns() {
        let rows = vec![vec!["a".to_owned(), "long value".to_owned()], vec!["longer".to_owned(), "b".to_owned()]];
        assert_eq!(table(&["X", "Y"], &rows, "none"), "X       Y\na       long value\nlonger  b\n");
        assert_eq!(table(&["X"], &[], "none"), "none\n");
    }

    #[test]
    fn times_are_utc() {
        assert_eq!(time(0), "1970-01-01 00:00:00 UTC");
    }
}
