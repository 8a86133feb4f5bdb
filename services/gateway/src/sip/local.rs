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
    pub tls_port: Option<u16>,
    pub user_agent: String,
}

impl Local {
    /// The advertised port for messages sent over `d`'s transport.
    pub fn port_for(&self, d: &Destination) -> u16 {
        match d {
            Destination::Udp(_) => self.udp_port.or(self.tcp_port).unwrap_or(5060),
            Destination::Tcp(_) => self.tcp_port.or(self.udp_port).unwrap_or(5060),
            Destination::Tls(_) => self.tls_port.unwrap_or(5061),
        }
    }

    /// A Via header value for a request sent to `d`.
    pub fn via(&self, d: &Destination, branch: &str) -> String {
        format!("SIP/2.0/{} {}:{};branch={};rport", d.transport_name(), self.host, self.port_for(d), branch)
    }

    /// The Contact URI (in angle brackets) for a dialog over `d`.
    ///
    /// Over TLS it is a SIPS URI: RFC 3261 §8.1.1.8 requires one when the
    /// request is for a SIPS URI, and RFC 5630 §3.1.3 deprecates
    /// `transport=tls`; a SIPS Contact also keeps the peer's in-dialog
    /// requests on TLS.
    pub fn contact(&self, d: &Destination) -> String {
        let (scheme, t) = match d {
            Destination::Udp(_) => ("sip", ""),
            Destination::Tcp(_) => ("sip", ";transport=tcp"),
            Destination::Tls(_) => ("sips", ""),
        };
        format!("<{scheme}:switchboard@{}:{}{t}>", self.host, self.port_for(d))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_is_advertised_with_its_own_port_and_a_sips_contact() {
        let local = Local { host: "gw.example.com".into(), udp_port: Some(5060), tcp_port: Some(5060), tls_port: Some(5061), user_agent: "sb".into() };
        let tls = Destination::Tls("192.0.2.1:5061".parse().unwrap());
        assert_eq!(local.via(&tls, "z9hG4bKx"), "SIP/2.0/TLS gw.example.com:5061;branch=z9hG4bKx;rport");
        assert_eq!(local.contact(&tls), "<sips:switchboard@gw.example.com:5061>");
        let tcp = Destination::Tcp("192.0.2.1:5060".parse().unwrap());
        assert_eq!(local.contact(&tcp), "<sip:switchboard@gw.example.com:5060;transport=tcp>");
    }
}
