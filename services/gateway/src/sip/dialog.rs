//! SIP dialogs (RFC 3261 §12): the state two user agents share between an
//! INVITE's answer and the BYE, from the gateway's side of one leg.
//!
//! A dialog knows its identifiers (Call-ID, local and remote tags), the
//! sequence numbers in each direction, the remote target (the peer's
//! Contact, refreshed by re-INVITE and UPDATE) and the route set built from
//! Record-Route. It builds the requests the gateway sends inside the dialog
//! and checks the ones it receives. Sans-IO: no clocks, no sockets.
//!
//! In-dialog requests go over the flow the dialog was established on (the
//! address the peer's INVITE came from, or the one the gateway's INVITE was
//! sent to). This is what works through NAT, and for a peer with a fixed
//! address it is the same place the route set or remote target names.

use super::headers::{new_branch, CSeq, NameAddr, SipUri};
use super::local::Local;
use super::{Destination, SipMessage};

/// One dialog, from the gateway's side.
#[derive(Debug, Clone, PartialEq)]
pub struct Dialog {
    pub call_id: String,
    pub local_tag: String,
    pub remote_tag: String,
    /// The gateway's URI in this dialog (From of its requests), no tag.
    pub local_uri: String,
    /// The peer's URI (To of the gateway's requests), no tag.
    pub remote_uri: String,
    /// CSeq of the last request the gateway sent.
    pub local_seq: u32,
    /// CSeq of the last request the peer sent, once it sent one.
    pub remote_seq: Option<u32>,
    /// Where requests are addressed: the peer's Contact.
    pub remote_target: String,
    /// Route headers for the gateway's requests, in order.
    pub route_set: Vec<String>,
    /// The transport flow of the dialog.
    pub flow: Destination,
}

/// Why an in-dialog request is refused (§12.2.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DialogError {
    /// CSeq lower than (or equal to) one already seen: 500.
    OutOfOrder,
}

impl Dialog {
    /// The dialog the gateway forms as UAS when it answers `invite` with
    /// `local_tag` (§12.1.1): route set from Record-Route in order.
    pub fn as_uas(invite: &SipMessage, local_tag: &str, flow: Destination) -> Option<Dialog> {
        let from = NameAddr::parse(invite.header("From")?)?;
        let to = NameAddr::parse(invite.header("To")?)?;
        let cseq = CSeq::parse(invite.header("CSeq")?)?;
        let remote_target = invite
            .header("Contact")
            .and_then(NameAddr::parse)
            .map(|c| c.uri)
            .unwrap_or_else(|| from.uri.clone());
        Some(Dialog {
            call_id: invite.header("Call-ID")?.to_owned(),
            local_tag: local_tag.to_owned(),
            remote_tag: from.tag().unwrap_or_default().to_owned(),
            local_uri: without_tag(invite.header("To")?),
            remote_uri: without_tag(invite.header("From")?),
            local_seq: 0,
            remote_seq: Some(cseq.seq),
            remote_target,
            route_set: invite.header_values("Record-Route").into_iter().map(str::to_owned).collect(),
            flow,
        })
        .filter(|_| to.tag().is_none())
    }

    /// The dialog the gateway forms as UAC when `response` (a 2xx, or a 1xx
    /// with a To tag) answers its `request` (§12.1.2): route set from
    /// Record-Route in reverse.
    pub fn as_uac(request: &SipMessage, response: &SipMessage, flow: Destination) -> Option<Dialog> {
        let from = NameAddr::parse(request.header("From")?)?;
        let to = NameAddr::parse(response.header("To")?)?;
        let cseq = CSeq::parse(request.header("CSeq")?)?;
        let remote_target = response
            .header("Contact")
            .and_then(NameAddr::parse)
            .map(|c| c.uri)
            .unwrap_or_else(|| request.request_uri().unwrap_or_default().to_owned());
        let mut route_set: Vec<String> = response.header_values("Record-Route").into_iter().map(str::to_owned).collect();
        route_set.reverse();
        Some(Dialog {
            call_id: request.header("Call-ID")?.to_owned(),
            local_tag: from.tag()?.to_owned(),
            remote_tag: to.tag()?.to_owned(),
            local_uri: without_tag(request.header("From")?),
            remote_uri: without_tag(request.header("To")?),
            local_seq: cseq.seq,
            remote_seq: None,
            remote_target,
            route_set,
            flow,
        })
    }

    /// From header value of the gateway's requests.
    pub fn local_header(&self) -> String {
        format!("{};tag={}", self.local_uri, self.local_tag)
    }

    /// To header value of the gateway's requests.
    pub fn remote_header(&self) -> String {
        if self.remote_tag.is_empty() {
            self.remote_uri.clone()
        } else {
            format!("{};tag={}", self.remote_uri, self.remote_tag)
        }
    }

    /// A new request inside the dialog (§12.2.1.1) with the next CSeq.
    /// ACK and CANCEL are not built here (they reuse the INVITE's number).
    pub fn request(&mut self, method: &str, local: &Local) -> SipMessage {
        self.local_seq += 1;
        let seq = self.local_seq;
        self.build(method, seq, local)
    }

    /// The ACK for a 2xx to the INVITE with sequence number `seq`
    /// (§13.2.2.4): a request of its own, new branch, the INVITE's CSeq.
    pub fn ack(&self, seq: u32, local: &Local) -> SipMessage {
        self.build("ACK", seq, local)
    }

    fn build(&self, method: &str, seq: u32, local: &Local) -> SipMessage {
        // Loose routing when the first route carries `lr`; strict routing
        // (the first route becomes the Request-URI) otherwise.
        let strict = self.route_set.first().is_some_and(|r| {
            NameAddr::parse(r).and_then(|n| SipUri::parse(&n.uri)).is_some_and(|u| !u.params.iter().any(|(n, _)| n == "lr"))
        });
        let (uri, routes): (String, Vec<String>) = if strict {
            let first = NameAddr::parse(&self.route_set[0]).map(|n| n.uri).unwrap_or_default();
            let mut rest: Vec<String> = self.route_set[1..].to_vec();
            rest.push(format!("<{}>", self.remote_target));
            (first, rest)
        } else {
            (self.remote_target.clone(), self.route_set.clone())
        };
        let mut m = SipMessage::request(method, uri);
        m.push_header("Via", local.via(&self.flow, &new_branch()))
            .push_header("Max-Forwards", "70")
            .push_header("From", self.local_header())
            .push_header("To", self.remote_header())
            .push_header("Call-ID", self.call_id.clone())
            .push_header("CSeq", format!("{seq} {method}"));
        for r in routes {
            m.push_header("Route", r);
        }
        m
    }

    /// Checks a request the peer sent inside the dialog and takes its CSeq
    /// (§12.2.2); re-INVITE and UPDATE refresh the remote target.
    pub fn on_request(&mut self, req: &SipMessage) -> Result<(), DialogError> {
        let Some(cseq) = req.header("CSeq").and_then(CSeq::parse) else { return Ok(()) };
        let method = req.method().unwrap_or("");
        if method != "ACK" && method != "CANCEL" {
            if self.remote_seq.is_some_and(|s| cseq.seq <= s) {
                return Err(DialogError::OutOfOrder);
            }
            self.remote_seq = Some(cseq.seq);
        }
        if method == "INVITE" || method == "UPDATE" {
            self.refresh_target(req);
        }
        Ok(())
    }

    /// Takes the Contact of a target-refresh request or its 2xx.
    pub fn refresh_target(&mut self, msg: &SipMessage) {
        if let Some(c) = msg.header("Contact").and_then(NameAddr::parse) {
            self.remote_target = c.uri;
        }
    }
}

fn without_tag(value: &str) -> String {
    match NameAddr::parse(value) {
        Some(n) => match &n.display {
            Some(d) => format!("\"{}\" <{}>", d.replace('"', ""), n.uri),
            None => format!("<{}>", n.uri),
        },
        None => value.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn local() -> Local {
        Local { host: "198.51.100.1".into(), udp_port: Some(5060), tcp_port: None, tls_port: None, user_agent: "t".into() }
    }

    fn flow() -> Destination {
        Destination::Udp("192.0.2.10:5060".parse().unwrap())
    }

    fn invite() -> SipMessage {
        let mut m = SipMessage::request("INVITE", "sip:+15550100@198.51.100.1");
        m.push_header("Via", "SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK1")
            .push_header("Record-Route", "<sip:p1.example.com;lr>, <sip:p2.example.com;lr>")
            .push_header("From", "\"Carrier\" <sip:+15550199@carrier.example>;tag=abc")
            .push_header("To", "<sip:+15550100@198.51.100.1>")
            .push_header("Call-ID", "c1")
            .push_header("CSeq", "10 INVITE")
            .push_header("Contact", "<sip:carrier@192.0.2.10:5060>");
        m
    }

    #[test]
    fn uas_dialog_routes_through_the_record_route_in_order_and_counts_its_own_cseq() {
        let mut d = Dialog::as_uas(&invite(), "gw1", flow()).unwrap();
        assert_eq!(d.remote_tag, "abc");
        assert_eq!(d.remote_seq, Some(10));
        let bye = d.request("BYE", &local());
        assert_eq!(bye.request_uri(), Some("sip:carrier@192.0.2.10:5060"));
        assert_eq!(bye.header_values("Route"), vec!["<sip:p1.example.com;lr>", "<sip:p2.example.com;lr>"]);
        assert_eq!(bye.header("From"), Some("<sip:+15550100@198.51.100.1>;tag=gw1"));
        assert_eq!(bye.header("To"), Some("\"Carrier\" <sip:+15550199@carrier.example>;tag=abc"));
        assert_eq!(bye.header("CSeq"), Some("1 BYE"));
        assert_eq!(d.request("INFO", &local()).header("CSeq"), Some("2 INFO"));
    }

    #[test]
    fn uas_dialog_needs_an_initial_invite() {
        let mut inv = invite();
        inv.set_header("To", "<sip:+15550100@198.51.100.1>;tag=x");
        assert!(Dialog::as_uas(&inv, "gw1", flow()).is_none());
    }

    #[test]
    fn uac_dialog_reverses_the_record_route_and_uses_the_answer_contact() {
        let mut req = SipMessage::request("INVITE", "sip:ada@192.0.2.20");
        req.push_header("From", "<sip:gw@198.51.100.1>;tag=f")
            .push_header("To", "<sip:ada@192.0.2.20>")
            .push_header("Call-ID", "c2")
            .push_header("CSeq", "1 INVITE");
        let mut ok = SipMessage::response(200, "OK");
        ok.push_header("To", "<sip:ada@192.0.2.20>;tag=t")
            .push_header("Record-Route", "<sip:a.example;lr>")
            .push_header("Record-Route", "<sip:b.example;lr>")
            .push_header("Contact", "<sip:ada@192.0.2.21:5070>");
        let mut d = Dialog::as_uac(&req, &ok, flow()).unwrap();
        let ack = d.ack(1, &local());
        assert_eq!(ack.header("CSeq"), Some("1 ACK"));
        assert_eq!(ack.request_uri(), Some("sip:ada@192.0.2.21:5070"));
        assert_eq!(ack.header_values("Route"), vec!["<sip:b.example;lr>", "<sip:a.example;lr>"]);
        assert_eq!(d.request("BYE", &local()).header("CSeq"), Some("2 BYE"));
    }

    #[test]
    fn strict_route_becomes_the_request_uri() {
        let mut inv = invite();
        inv.set_header("Record-Route", "<sip:strict.example.com>");
        let mut d = Dialog::as_uas(&inv, "gw1", flow()).unwrap();
        let bye = d.request("BYE", &local());
        assert_eq!(bye.request_uri(), Some("sip:strict.example.com"));
        assert_eq!(bye.header_values("Route"), vec!["<sip:carrier@192.0.2.10:5060>"]);
    }

    #[test]
    fn out_of_order_requests_are_refused_and_reinvite_refreshes_the_target() {
        let mut d = Dialog::as_uas(&invite(), "gw1", flow()).unwrap();
        let mut reinv = invite();
        reinv.set_header("CSeq", "10 INVITE");
        assert_eq!(d.on_request(&reinv), Err(DialogError::OutOfOrder));
        reinv.set_header("CSeq", "11 INVITE");
        reinv.set_header("Contact", "<sip:carrier@192.0.2.11:5060>");
        assert_eq!(d.on_request(&reinv), Ok(()));
        assert_eq!(d.remote_target, "sip:carrier@192.0.2.11:5060");
        let mut ack = invite();
        ack.start = crate::sip::StartLine::Request { method: "ACK".into(), uri: "sip:x@y".into() };
        ack.set_header("CSeq", "11 ACK");
        assert_eq!(d.on_request(&ack), Ok(()), "ACK reuses the INVITE's number");
    }
}
