//! The command line: one subcommand per role or operator task.
//!
//! Options here only choose what to run and override a few addresses for
//! `up`; everything else is configuration (TOML file plus `SWITCHBOARD_…`
//! variables, see `config.rs`), so a deployment is described in one place.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{ArgGroup, Args, Parser, Subcommand};

/// Switchboard: a self-hostable telephony gateway for Salesforce.
///
/// Configuration comes from a TOML file (--config) and from SWITCHBOARD_…
/// environment variables, which win over the file; nested keys are joined
/// with a double underscore, e.g. SWITCHBOARD_SIP__UDP=0.0.0.0:5060 sets
/// `udp` in `[sip]`; an empty value unsets an optional key. Configuration
/// errors exit with status 2.
#[derive(Debug, Parser)]
#[command(name = "switchboard", version, propagate_version = true, max_term_width = 100)]
pub struct Cli {
    /// TOML configuration file. Without it the built-in defaults and
    /// SWITCHBOARD_… variables are used.
    #[arg(long, short = 'c', global = true, value_name = "FILE", env = "SWITCHBOARD_CONFIG")]
    pub config: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

/// What to run.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway and the connector in one process on the embedded
    /// defaults (SQLite file, local recordings, outbox as event log); the
    /// SQLite schema is migrated automatically.
    Up(UpArgs),
    /// Run the gateway role: SIP, media, recordings, call events, HTTP API.
    /// Refuses to start on an unmigrated database.
    Gateway,
    /// Run the connector role: sync call events to Salesforce. Serves
    /// /healthz and /metrics on http.listen. Refuses to start on an
    /// unmigrated database.
    Connector,
    /// Apply the database schema to the configured database (SQLite or
    /// PostgreSQL); safe to run repeatedly.
    Migrate,
    /// Provision users, devices, groups and numbers directly in the
    /// configured database.
    Admin(AdminArgs),
    /// Feed dead letters (events the connector set aside) back to the
    /// connector once their cause is fixed.
    ///
    /// The connector sets aside what it cannot apply: undecodable records,
    /// invalid events, and events whose Salesforce write was refused for
    /// good (a validation rule, a missing field permission). After fixing
    /// the cause in the org, `switchboard replay` lists the matching dead
    /// letters (call id, label or error code, origin, reason), feeds them
    /// back and prints how many; `--dry-run` only lists them.
    ///
    /// With events.log = "outbox" each letter's event is appended to the
    /// outbox again and the letter is stamped replayed, in one transaction;
    /// with "kafka" the dead-letter topic is read to its end in the consumer
    /// group `<kafka.group_id>.replay` and each letter's record goes back to
    /// the call-event topic, its offset committed once the broker took it.
    /// Either way each letter is replayed once; an event that fails again
    /// comes back as a new letter. For a refused write, the refusal
    /// recorded for the call is cleared first, so the connector writes the
    /// Task (or the new Case) again instead of skipping fields it already
    /// saw refused.
    ///
    /// Undecodable letters are left out unless `--label undecodable` is
    /// given: the same bytes only dead-letter again, unless a newer
    /// connector reads them. The connector may keep running meanwhile.
    Replay(ReplayArgs),
    /// Inspect the configuration.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
}

/// Options of `switchboard up`; each overrides the configuration.
#[derive(Debug, Args)]
pub struct UpArgs {
    /// SIP listen address for both UDP and TCP (overrides sip.udp and
    /// sip.tcp); port 0 picks free ports.
    #[arg(long, value_name = "ADDR")]
    pub sip: Option<SocketAddr>,
    /// HTTP listen address for the APIs, /healthz and /metrics (overrides
    /// http.listen); port 0 picks a free port.
    #[arg(long, value_name = "ADDR")]
    pub http: Option<SocketAddr>,
    /// Directory of the SQLite database and the recordings (overrides
    /// data_dir); created when missing.
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
}

/// Options of `switchboard replay`: which dead letters, and whether to
/// replay them or only list them. Filters combine (all must match).
#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// Only the dead letters of this call.
    #[arg(long, value_name = "ID")]
    pub call_id: Option<String>,
    /// Only dead letters with this label; undecodable ones are replayed
    /// only when named here.
    #[arg(long, value_parser = LABELS)]
    pub label: Option<String>,
    /// Only writes Salesforce refused with this error code, e.g.
    /// FIELD_CUSTOM_VALIDATION_EXCEPTION (case is ignored).
    #[arg(long, value_name = "CODE")]
    pub error_code: Option<String>,
    /// List what would be replayed and change nothing: no event is fed
    /// back, no letter stamped, no offset committed.
    #[arg(long)]
    pub dry_run: bool,
    /// Replay at most this many dead letters, the oldest first; the rest
    /// wait for the next run.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub limit: Option<u64>,
}

/// The labels of dead letters, as the connector writes them.
pub const LABELS: [&str; 3] = ["undecodable", "invalid_event", "salesforce_rejected"];

/// `switchboard admin`.
#[derive(Debug, Args)]
pub struct AdminArgs {
    /// Print the result as JSON instead of a table.
    #[arg(long, global = true)]
    pub json: bool,

    #[command(subcommand)]
    pub command: AdminCommand,
}

/// What to provision.
#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Agents: people calls are routed to, linked to their Salesforce user.
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
    /// SIP devices that ring when their user is called.
    Device {
        #[command(subcommand)]
        command: DeviceCommand,
    },
    /// Groups of users whose devices all ring when the group is called.
    Group {
        #[command(subcommand)]
        command: GroupCommand,
    },
    /// Phone numbers (DIDs) routed to a user or a group; one of them may be
    /// the company main line.
    Number {
        #[command(subcommand)]
        command: NumberCommand,
    },
    /// Admin auto-recording ("record all calls"): every call on a number
    /// (the main line too) or for a group is recorded, visible to admins
    /// only.
    RecordingPolicy {
        #[command(subcommand)]
        command: RecordingPolicyCommand,
    },
}

/// `switchboard admin user …`.
#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Create a user and print it (its id is needed for devices and numbers).
    Add {
        /// Display name.
        #[arg(long)]
        name: String,
        /// Internal extension, digits only; must be unique.
        #[arg(long)]
        extension: Option<String>,
        /// Linked Salesforce user id (15 or 18 characters starting with 005);
        /// must be unique.
        #[arg(long, value_name = "ID")]
        salesforce_user_id: Option<String>,
        /// Make the user an admin (sees admin-only recordings).
        #[arg(long)]
        admin: bool,
    },
    /// List every user.
    List,
    /// Make a user an admin, or an agent again.
    Role {
        /// Id of the user.
        id: String,
        /// `admin` or `agent`.
        #[arg(value_parser = ["admin", "agent"])]
        role: String,
    },
    /// Delete a user, its devices and group memberships; its numbers stay,
    /// unassigned.
    Remove {
        /// Id of the user.
        id: String,
    },
}

/// `switchboard admin device …`.
#[derive(Debug, Subcommand)]
pub enum DeviceCommand {
    /// Add a SIP device to a user.
    Add {
        /// Id of the user the device belongs to.
        #[arg(long, value_name = "USER_ID")]
        user: String,
        /// A label, e.g. "desk phone".
        #[arg(long)]
        name: String,
        /// SIP URI calls are sent to, e.g. sip:ada@192.0.2.10:5060.
        #[arg(long, value_name = "URI")]
        contact: String,
    },
    /// List devices.
    List {
        /// Only the devices of this user.
        #[arg(long, value_name = "USER_ID")]
        user: Option<String>,
    },
    /// Delete a device.
    Remove {
        /// Id of the device.
        id: String,
    },
    /// Set the digest credentials the device registers with (only a hash
    /// is stored, bound to the configured sip.realm).
    Credentials {
        /// Id of the device.
        id: String,
        /// SIP username the device authenticates as (unique).
        #[arg(long, value_name = "NAME")]
        username: String,
        /// The password (12 characters or more); prefer --password-stdin,
        /// which keeps it out of the process list.
        #[arg(long, conflicts_with = "password_stdin", required_unless_present = "password_stdin")]
        password: Option<String>,
        /// Read the password from the first line of standard input.
        #[arg(long)]
        password_stdin: bool,
    },
}

/// `switchboard admin group …`.
#[derive(Debug, Subcommand)]
pub enum GroupCommand {
    /// Create a group and print it (its id is needed for members and
    /// numbers).
    Add {
        /// Display name, e.g. Sales.
        #[arg(long)]
        name: String,
        /// Internal extension, digits only; unique across users and groups.
        #[arg(long)]
        extension: Option<String>,
    },
    /// List every group with its members in ring order.
    List,
    /// Delete a group; its members stay, its numbers stay unassigned.
    Remove {
        /// Id of the group.
        id: String,
    },
    /// The users a group rings.
    Member {
        #[command(subcommand)]
        command: GroupMemberCommand,
    },
}

/// `switchboard admin group member …`.
#[derive(Debug, Subcommand)]
pub enum GroupMemberCommand {
    /// Add a user to a group, last in ring order (a member stays where it
    /// is); prints the members.
    Add {
        /// Id of the group.
        group: String,
        /// Id of the user.
        user: String,
    },
    /// List a group's members in ring order.
    List {
        /// Id of the group.
        group: String,
    },
    /// Take a user out of a group.
    Remove {
        /// Id of the group.
        group: String,
        /// Id of the user.
        user: String,
    },
}

/// `switchboard admin number …`.
#[derive(Debug, Subcommand)]
pub enum NumberCommand {
    /// Route a number to a user or a group. Spaces, dashes, dots and
    /// parentheses are ignored and a leading 00 means +, so
    /// "+1 (415) 555-0100" is stored as +14155550100.
    #[command(group(ArgGroup::new("owner").required(true).args(["user", "group"])))]
    Add {
        /// The phone number.
        number: String,
        /// Id of the user the number routes to.
        #[arg(long, value_name = "USER_ID")]
        user: Option<String>,
        /// Id of the group the number routes to (every member rings).
        #[arg(long, value_name = "GROUP_ID")]
        group: Option<String>,
        /// Make this number the company main line, which every user may
        /// present as caller ID; any other number stops being it.
        #[arg(long)]
        main_line: bool,
    },
    /// List every number, its owner and which is the main line.
    List,
    /// Stop routing a number.
    Remove {
        /// The phone number, in any spelling `add` accepts.
        number: String,
    },
}

/// `switchboard admin recording-policy …`.
#[derive(Debug, Subcommand)]
pub enum RecordingPolicyCommand {
    /// Record every call on a number, or for a group, for admins only: calls
    /// to the number or group, and outbound calls presenting the number.
    Set(PolicyTarget),
    /// Stop recording a number's or a group's calls for admins (recordings
    /// already made stay).
    Clear(PolicyTarget),
    /// List the numbers and groups whose calls are recorded for admins.
    List,
}

/// What a recording policy covers: one number or one group.
#[derive(Debug, Args)]
#[command(group(ArgGroup::new("target").required(true).args(["number", "group"])))]
pub struct PolicyTarget {
    /// A provisioned number, in any spelling `number add` accepts; the main
    /// line is a number like the others.
    #[arg(long)]
    pub number: Option<String>,
    /// A group (which is also the call queue), by id or by name.
    #[arg(long, value_name = "ID_OR_NAME")]
    pub group: Option<String>,
}

/// `switchboard config …`.
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Validate the configuration and print the effective result as TOML,
    /// with secrets redacted; exits with status 2 when it is invalid.
    Check,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    /// Every subcommand and every option says what it is for.
    #[test]
    fn everything_is_documented() {
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for arg in cmd.get_arguments() {
                if arg.get_help().is_none() && arg.get_long_help().is_none() {
                    missing.push(format!("{path} {}", arg.get_id()));
                }
            }
            for sub in cmd.get_subcommands() {
                let sub_path = format!("{path} {}", sub.get_name());
                if sub.get_about().is_none() {
                    missing.push(sub_path.clone());
                }
                walk(sub, &sub_path, missing);
            }
        }
        let mut missing = Vec::new();
        walk(&Cli::command(), "switchboard", &mut missing);
        assert!(missing.is_empty(), "undocumented: {missing:?}");
    }
}
