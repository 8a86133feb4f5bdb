//! The gateway's own SIP identity: the host and ports it advertises in Via
//! and Contact, per transport. One place, so every message the gateway
//! originates names itself the same way.

use super::Destination;

/// The gateway's own addresses and name, as written into messages.
#[derive(Debug, Clone)]
pub struct Local {
    /// Host for Via/Contact (advertised).
    pub host: String,
    pub udp_port: Option<u16>,
    pub tcp_port: Option<u16>,
    pub user_agent: String,
}

impl Local {
    /// The advertised port for messages sent over `d`'s transport.
    pub fn port_for(&self, d: &Destination) -> u16 {
        match d {
            Destination::Udp(_) => self.udp_port.or(self.tcp_port).unwrap_or(5060),
            Destination::Tcp(_) => self.tcp_port.or(self.udp_port).unwrap_or(5060),
        }
    }

    /// A Via header value for a request sent to `d`.
    pub fn via(&self, d: &Destination, branch: &str) -> String {
        format!("SIP/2.0/{} {}:{};branch={};rport", d.transport_name(), self.host, self.port_for(d), branch)
    }

    /// The Contact URI (in angle brackets) for a dialog over `d`.
    pub fn contact(&self, d: &Destination) -> String {
        let t = match d {
            Destination::Udp(_) => "",
            Destination::Tcp(_) => ";transport=tcp",
        };
        format!("<sip:switchboard@{}:{}{}>", self.host, self.port_for(d), t)
    }
}
