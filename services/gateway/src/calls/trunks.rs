//! SIP trunks: which sources may send calls without authentication, where
//! outbound calls go, and how dialled numbers become E.164. Pure: address
//! resolution happens in the call manager.

use std::net::IpAddr;

use ipnet::IpNet;

use super::b2bua::{AuthCredentials, Target};
use crate::config::TrunkConfig;
use crate::sip::headers::split_host_port;
use crate::sip::Destination;

/// One configured trunk.
#[derive(Debug, Clone)]
pub struct Trunk {
    pub config: TrunkConfig,
    nets: Vec<IpNet>,
}

/// Every configured trunk, in configuration order.
#[derive(Debug, Clone, Default)]
pub struct Trunks {
    trunks: Vec<Trunk>,
}

impl Trunks {
    /// From validated configuration (unparsable networks were refused by
    /// `GatewayConfig::validate`; any left are skipped).
    pub fn from_config(configs: &[TrunkConfig]) -> Trunks {
        let trunks = configs
            .iter()
            .map(|c| Trunk {
                config: c.clone(),
                nets: c
                    .inbound_from
                    .iter()
                    .filter_map(|n| n.parse::<IpNet>().ok().or_else(|| n.parse::<IpAddr>().ok().map(IpNet::from)))
                    .collect(),
            })
            .collect();
        Trunks { trunks }
    }

    /// The trunk whose `inbound_from` contains `ip`.
    pub fn inbound(&self, ip: IpAddr) -> Option<&Trunk> {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        self.trunks.iter().find(|t| t.nets.iter().any(|n| n.contains(&ip)))
    }

    /// The trunk outbound calls go through: the first with an address.
    pub fn outbound(&self) -> Option<&Trunk> {
        self.trunks.iter().find(|t| t.config.address.is_some())
    }

    /// Every trunk, in configuration order.
    pub fn all(&self) -> impl Iterator<Item = &Trunk> {
        self.trunks.iter()
    }

    pub fn is_empty(&self) -> bool {
        self.trunks.is_empty()
    }
}

impl Trunk {
    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// A dialled string as the trunk expects it: E.164 (`+` and digits), or
    /// verbatim for emergency numbers. `None` when it is no phone number.
    pub fn normalise(&self, dialled: &str) -> Option<String> {
        let c = &self.config;
        let cleaned: String = dialled.chars().filter(|ch| !matches!(ch, ' ' | '-' | '.' | '(' | ')')).collect();
        if c.verbatim.contains(&cleaned) {
            return Some(cleaned);
        }
        let (plus, digits) = match cleaned.strip_prefix('+') {
            Some(rest) => (true, rest),
            None => (false, cleaned.as_str()),
        };
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let e164 = if plus {
            digits.to_owned()
        } else if let Some(rest) = digits.strip_prefix(c.international_prefix.as_str()) {
            rest.to_owned()
        } else if let Some(rest) = (!c.national_prefix.is_empty()).then(|| digits.strip_prefix(c.national_prefix.as_str())).flatten() {
            format!("{}{}", c.country_code, rest)
        } else {
            format!("{}{}", c.country_code, digits)
        };
        // E.164: at most 15 digits; shorter than 7 is no public number.
        (7..=15).contains(&e164.len()).then(|| format!("+{e164}"))
    }

    /// `host[:port]` outbound requests are addressed to.
    fn address(&self) -> Option<(String, Option<u16>)> {
        split_host_port(self.config.address.as_deref()?)
    }

    /// Request-URI for a call to `number` through this trunk.
    pub fn request_uri(&self, number: &str) -> Option<String> {
        Some(format!("sip:{number}@{}", self.hostport()?))
    }

    /// The trunk's own URI (OPTIONS keep-alives).
    pub fn uri(&self) -> Option<String> {
        Some(format!("sip:{}", self.hostport()?))
    }

    fn hostport(&self) -> Option<String> {
        let (host, port) = self.address()?;
        let transport = match self.config.transport.as_str() {
            "tcp" => ";transport=tcp",
            "tls" => ";transport=tls",
            _ => "",
        };
        Some(match port {
            Some(p) => format!("{host}:{p}{transport}"),
            None => format!("{host}{transport}"),
        })
    }

    /// The transport destination of the trunk's next hop at `addr`.
    pub fn destination(&self, addr: std::net::SocketAddr) -> Destination {
        match self.config.transport.as_str() {
            "tcp" => Destination::Tcp(addr),
            "tls" => Destination::Tls(addr),
            _ => Destination::Udp(addr),
        }
    }

    /// The name the trunk's TLS certificate must carry: the next hop's host
    /// when it is a DNS name (an IP literal is verified as an address).
    pub fn tls_server_name(&self) -> Option<String> {
        if self.config.transport != "tls" {
            return None;
        }
        let (host, _) = self.next_hop()?;
        host.parse::<std::net::IpAddr>().is_err().then_some(host)
    }

    /// Host and port the first hop resolves from: the outbound proxy when
    /// configured, the trunk's address otherwise.
    pub fn next_hop(&self) -> Option<(String, u16)> {
        let default_port = if self.config.transport == "tls" { 5061 } else { 5060 };
        if let Some(uri) = self.config.outbound_proxy.as_deref().and_then(crate::sip::headers::SipUri::parse) {
            return Some((uri.host.trim_start_matches('[').trim_end_matches(']').to_owned(), uri.port.unwrap_or(default_port)));
        }
        let (host, port) = self.address()?;
        Some((host.trim_start_matches('[').trim_end_matches(']').to_owned(), port.unwrap_or(default_port)))
    }

    /// Host of From and P-Asserted-Identity.
    pub fn from_domain(&self) -> String {
        self.config.from_domain.clone().or_else(|| self.address().map(|(h, _)| h)).unwrap_or_default()
    }

    /// The fork target for `number`, once the next hop resolved to `addr`.
    pub fn target(&self, number: &str, addr: std::net::SocketAddr) -> Option<Target> {
        let mut t = Target::new(self.request_uri(number)?, self.destination(addr));
        t.server_name = self.tls_server_name();
        t.credentials = match (&self.config.username, &self.config.password) {
            (Some(u), Some(p)) => Some(AuthCredentials { username: u.clone(), password: p.clone() }),
            _ => None,
        };
        if let Some(p) = &self.config.outbound_proxy {
            t.route = vec![format!("<{p}>")];
        }
        Some(t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trunk(cc: &str, national: &str, intl: &str) -> Trunk {
        let config = TrunkConfig {
            name: "carrier".into(),
            address: Some("sip.carrier.example:5080".into()),
            country_code: cc.into(),
            national_prefix: national.into(),
            international_prefix: intl.into(),
            inbound_from: vec!["203.0.113.0/24".into(), "198.51.100.7".into()],
            ..TrunkConfig::default()
        };
        Trunks::from_config(&[config]).trunks.remove(0)
    }

    #[test]
    fn north_american_dialling_becomes_e164() {
        let t = trunk("1", "1", "011");
        assert_eq!(t.normalise("4155550100").as_deref(), Some("+14155550100"));
        assert_eq!(t.normalise("1 (415) 555-0100").as_deref(), Some("+14155550100"));
        assert_eq!(t.normalise("+14155550100").as_deref(), Some("+14155550100"));
        assert_eq!(t.normalise("011442071234567").as_deref(), Some("+442071234567"));
        assert_eq!(t.normalise("911").as_deref(), Some("911"), "emergency numbers pass verbatim");
        assert_eq!(t.normalise("ada"), None);
        assert_eq!(t.normalise("12"), None, "too short for a public number");
        assert_eq!(t.normalise("+1234567890123456"), None, "longer than E.164 allows");
    }

    #[test]
    fn european_dialling_becomes_e164() {
        let t = trunk("44", "0", "00");
        assert_eq!(t.normalise("020 7123 4567").as_deref(), Some("+442071234567"));
        assert_eq!(t.normalise("0049301234567").as_deref(), Some("+49301234567"));
        assert_eq!(t.normalise("112").as_deref(), Some("112"));
    }

    #[test]
    fn inbound_matches_networks_and_single_addresses() {
        let trunks = Trunks::from_config(&[trunk("1", "1", "011").config]);
        assert!(trunks.inbound("203.0.113.77".parse().unwrap()).is_some());
        assert!(trunks.inbound("198.51.100.7".parse().unwrap()).is_some());
        assert!(trunks.inbound("::ffff:198.51.100.7".parse().unwrap()).is_some(), "v4-mapped v6");
        assert!(trunks.inbound("198.51.100.8".parse().unwrap()).is_none());
        assert!(Trunks::default().inbound("127.0.0.1".parse().unwrap()).is_none(), "no trunk, nobody is trusted");
    }

    #[test]
    fn targets_carry_uri_route_and_credentials() {
        let mut t = trunk("1", "1", "011");
        t.config.outbound_proxy = Some("sip:edge.carrier.example:5070;lr".into());
        t.config.username = Some("acct".into());
        t.config.password = Some("pw".into());
        t.config.transport = "tcp".into();
        assert_eq!(t.next_hop(), Some(("edge.carrier.example".into(), 5070)));
        let target = t.target("+14155550100", "192.0.2.1:5070".parse().unwrap()).unwrap();
        assert_eq!(target.request_uri, "sip:+14155550100@sip.carrier.example:5080;transport=tcp");
        assert_eq!(target.dest, Destination::Tcp("192.0.2.1:5070".parse().unwrap()));
        assert_eq!(target.route, vec!["<sip:edge.carrier.example:5070;lr>".to_owned()]);
        assert_eq!(target.credentials.unwrap().username, "acct");
        assert_eq!(t.from_domain(), "sip.carrier.example");
        assert_eq!(target.server_name, None);
    }

    #[test]
    fn a_tls_trunk_is_reached_over_tls_and_verified_by_name() {
        let mut t = trunk("1", "1", "011");
        t.config.transport = "tls".into();
        let target = t.target("+14155550100", "192.0.2.1:5061".parse().unwrap()).unwrap();
        assert_eq!(target.dest, Destination::Tls("192.0.2.1:5061".parse().unwrap()));
        assert_eq!(target.request_uri, "sip:+14155550100@sip.carrier.example:5080;transport=tls");
        assert_eq!(target.server_name.as_deref(), Some("sip.carrier.example"));
    }
}
