//! RFC 4475, the SIP torture test messages, as a kept suite.
//!
//! `tests/torture/<name>.sip` holds one message per RFC 4475 case, named by
//! the case's identifier. The texts are our own: each exercises the same
//! oddity as the RFC's message of that name (folding, escapes, compact
//! forms, bad Content-Length, unknown schemes...), with CRLF line endings
//! and, where the case needs them, bytes that are not text. [`CASES`] says
//! what each one tests and what a conformant B2BUA does with it:
//!
//! - valid requests are processed: the gateway's answer is whatever its
//!   logic gives (200 to OPTIONS, 401 to an unauthenticated REGISTER, 404
//!   for a number nobody owns, 481, 501 for a method it lacks...);
//! - invalid requests are answered 400 (505 for a SIP version it lacks),
//!   an unknown Request-URI scheme 416, and the semantic cases their own
//!   codes (420, 415, 406);
//! - responses with no transaction here, and bytes that cannot be answered,
//!   are dropped.
//!
//! Every case is checked three ways: at the codec and validation level,
//! against a real gateway over UDP (the stream-framing cases over TCP as
//! well), and by parsing every prefix of it (no input may panic).

use std::net::SocketAddr;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::time::Duration;

use switchboard_gateway::config::GatewayConfig;
use switchboard_gateway::sip::headers::{unescape, CSeq, NameAddr, SipUri, Via};
use switchboard_gateway::sip::message::{frame_length, Frame};
use switchboard_gateway::sip::response::{make_response, validate_request};
use switchboard_gateway::sip::{ParseError, SipMessage, StartLine};
use switchboard_gateway::Gateway;
use switchboard_store::Database;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio_util::sync::CancellationToken;

/// The largest message the tests accept (the gateway's default).
const MAX: usize = 65_535;
/// How long any one answer may take.
const WAIT: Duration = Duration::from_secs(10);

/// What the gateway does with a case.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    /// A request that parses and validates; processing answers it with this
    /// final status.
    Processed(u16),
    /// A request that parses but is refused by validation with this status;
    /// the reason names the fault (contains the text).
    Rejected(u16, &'static str),
    /// A response with no transaction here: parsed, then dropped unanswered.
    StrayResponse,
    /// Bytes no response can be built for: a parse error, dropped unanswered.
    Unparsable(ParseError),
}

use Outcome::*;

/// One RFC 4475 case.
struct Case {
    /// The RFC 4475 identifier, also the file name.
    name: &'static str,
    /// The RFC 4475 section.
    section: &'static str,
    /// What the message exercises, in one line.
    tests: &'static str,
    outcome: Outcome,
    /// The Call-ID an answer carries (the top Via branch when there is none).
    key: &'static str,
    /// Codec-level facts about the parsed message (panics when one fails).
    check: fn(&SipMessage),
}

fn no_check(_: &SipMessage) {}

fn name_addr(m: &SipMessage, header: &str) -> NameAddr {
    NameAddr::parse(m.header(header).unwrap_or_else(|| panic!("a {header}"))).unwrap_or_else(|| panic!("{header} parses"))
}

fn sip_uri(m: &SipMessage) -> SipUri {
    SipUri::parse(m.request_uri().expect("a request")).expect("the Request-URI parses")
}

fn vias(m: &SipMessage) -> Vec<Via> {
    m.header_values("Via").iter().map(|v| Via::parse(v).expect("every Via parses")).collect()
}

fn content_length_matches_body(m: &SipMessage) {
    let declared: usize = m.header("Content-Length").expect("a Content-Length").parse().unwrap();
    assert_eq!(declared, m.body.len());
}

/// The expected outcome of every case, in RFC order.
const CASES: &[Case] = &[
    // §3.1.1 Valid messages: accepted and processed.
    Case {
        name: "wsinv",
        section: "3.1.1.1",
        tests: "folded and oddly spaced headers, mixed-case and compact names, escaped quotes in a display name, empty and unknown headers",
        // The To tag names a dialog the gateway does not have.
        outcome: Processed(481),
        key: "wsinv.7d1e@192.0.2.20",
        check: |m| {
            assert_eq!(m.method(), Some("INVITE"));
            assert_eq!(m.request_uri(), Some("sip:+14155550100@gw.example.com;odd-param"));
            let to = name_addr(m, "t");
            assert_eq!((to.uri.as_str(), to.tag()), ("sip:+14155550100@gw.example.com", Some("81x7q")));
            let from = name_addr(m, "f");
            assert_eq!(from.display.as_deref(), Some(r#"Ann "Q" Tester \"#));
            assert_eq!((from.uri.as_str(), from.tag()), ("sip:ann@carrier.example.net", Some("fz98")));
            assert_eq!(m.header("Max-Forwards"), Some("0042"));
            assert_eq!(CSeq::parse(m.header("CSeq").unwrap()), Some(CSeq { seq: 17, method: "INVITE".into() }));
            let v = vias(m);
            let hops: Vec<_> = v.iter().map(|v| (v.transport.as_str(), v.host.as_str(), v.branch())).collect();
            assert_eq!(
                hops,
                [
                    ("UDP", "192.0.2.20", Some("wsinv2543x")),
                    ("TCP", "relay.example.net", Some("z9hG4bKws1")),
                    ("UDP", "192.0.2.99", Some("z9hG4bKws2"))
                ]
            );
            assert_eq!(m.header("Subject"), Some(""));
            assert_eq!(m.header("x-odd-header"), Some("some value that continues here"));
            assert_eq!(m.header("X-Only-Separators"), Some(";,;;,,;"));
            assert_eq!(m.header("Route"), Some("<sip:edge.example.net;lr;foo=bar;flagonly>"));
            let contact = name_addr(m, "m");
            assert_eq!(contact.display.as_deref(), Some(r#"A "quoted" contact"#));
            assert_eq!(contact.params.len(), 3);
            assert_eq!(switchboard_gateway::sip::headers::param(&contact.params, "expires"), Some("120"));
            content_length_matches_body(m);
            assert!(m.body.starts_with(b"v=0\r\n"));
        },
    },
    Case {
        name: "intmeth",
        section: "3.1.1.2",
        tests: "every token character in a method and header name, odd but legal characters in URIs, Call-ID and parameters, UTF-8 and escaped controls",
        outcome: Processed(501),
        key: "intmeth.w%QZ-!.*_+'@host`~)(><:\\/\"][?}{",
        check: |m| {
            assert_eq!(m.method(), Some("!odd-Method.0123456789_*+`%okay'~"));
            let uri = sip_uri(m);
            assert_eq!(uri.user.as_deref(), Some("a_strange.USER~(really!)&why'not+it$/sure?,/;;*"));
            assert_eq!(uri.host, "gw.example.com");
            assert_eq!(name_addr(m, "To").display.as_deref(), Some("BELL:\x07 NUL:\x00 DEL:\x7f"));
            let from = name_addr(m, "From");
            assert_eq!(from.display.as_deref(), Some("tok1~` tok2'+_ tok3*%!.-"));
            assert_eq!(from.tag(), Some("_tg~1'+`*%!-."));
            assert_eq!(m.header("X-Token-Name-!.%*+_`'~"), Some("\u{feff}\u{8a66}\u{9a13}\u{4e2d}"));
            assert_eq!(CSeq::parse(m.header("CSeq").unwrap()).unwrap().method, m.method().unwrap());
        },
    },
    Case {
        name: "esc01",
        section: "3.1.1.3",
        tests: "%-escapes in the Request-URI user part, To and From users and Contact URI parameters",
        outcome: Processed(404),
        key: "esc01.90ab1@192.0.2.40",
        check: |m| {
            let user = sip_uri(m).user.unwrap();
            assert_eq!(user, "sips%3Aagent%40example.org", "kept as received");
            assert_eq!(unescape(&user), b"sips:agent@example.org");
            let from = SipUri::parse(&name_addr(m, "From").uri).unwrap();
            assert_eq!(unescape(from.user.as_deref().unwrap()), b"I have spaces");
            let contact = SipUri::parse(&name_addr(m, "Contact").uri).unwrap();
            let value = switchboard_gateway::sip::headers::param(&contact.params, "k%65y").unwrap();
            // Unescaping is done once: %25%34%31 is "%41", not "A".
            assert_eq!(unescape(value), b"value%41");
        },
    },
    Case {
        name: "escnull",
        section: "3.1.1.4",
        tests: "escaped NULs (%00) in URI user parts; two contacts that differ only by them",
        outcome: Processed(401),
        key: "escnull.5566@192.0.2.41",
        check: |m| {
            let to = SipUri::parse(&name_addr(m, "To").uri).unwrap();
            assert_eq!(unescape(to.user.as_deref().unwrap()), b"zero-\0-zero", "the NUL does not cut the name");
            let contacts: Vec<Vec<u8>> = m
                .header_values("Contact")
                .iter()
                .map(|c| unescape(&SipUri::parse(&NameAddr::parse(c).unwrap().uri).unwrap().user.unwrap()))
                .collect();
            assert_eq!(contacts, [b"\0".to_vec(), b"\0\0".to_vec()]);
        },
    },
    Case {
        name: "esc02",
        section: "3.1.1.5",
        tests: "% where it is no escape: a method spelled with %-sequences and display names with % signs",
        outcome: Processed(501),
        key: "esc02.aa77@192.0.2.42",
        check: |m| {
            assert_eq!(m.method(), Some("RE%47IST%45R"), "not REGISTER: methods are not unescaped");
            assert_eq!(name_addr(m, "To").display.as_deref(), Some("%Z%45"));
        },
    },
    Case {
        name: "lwsdisp",
        section: "3.1.1.6",
        tests: "no white space between a display name and <",
        outcome: Processed(200),
        key: "lwsdisp.1f2e@carrier.example.net",
        check: |m| {
            let from = name_addr(m, "From");
            assert_eq!((from.display.as_deref(), from.uri.as_str(), from.tag()), (Some("ann"), "sip:ann@carrier.example.net", Some("lw77")));
        },
    },
    Case {
        name: "longreq",
        section: "3.1.1.7",
        tests: "very long display name, parameters, tag, Call-ID, branch and header values; 31 Via headers in every spelling",
        outcome: Processed(404),
        key: "longreq.reallyquitereallyquitereallyquitereallyquitereallyquitereallyquitereallyquitereallyquitereallyquitereallyquitereallyquitereallyquitereallyquitereallyquitereallyquitereallyquitereallyquitereallyquitereallyquitereallyquite@192.0.2.44",
        check: |m| {
            let v = vias(m);
            assert_eq!(v.len(), 31);
            assert_eq!(v[0].host, "hop30.example.net");
            assert_eq!(v[30].branch().map(str::len), Some(7 + 400));
            let to = name_addr(m, "To");
            assert!(to.display.unwrap().ends_with("exceedingly long name"));
            assert_eq!(name_addr(m, "From").tag().map(str::len), Some(101));
            assert_eq!(m.header("Call-ID").map(str::len), Some(8 + 220 + 11));
            content_length_matches_body(m);
        },
    },
    Case {
        name: "dblreq",
        section: "3.1.1.8",
        tests: "a second request after the end of the first one's body in the same datagram (ignored over UDP)",
        outcome: Processed(401),
        key: "dblreq.reg.0042@192.0.2.45",
        check: |m| {
            assert_eq!(m.method(), Some("REGISTER"));
            assert!(m.body.is_empty(), "Content-Length: 0 ends the message; the INVITE after it is ignored");
        },
    },
    Case {
        name: "semiuri",
        section: "3.1.1.9",
        tests: "a ; parameter inside the Request-URI user part; a folded Accept list",
        outcome: Processed(200),
        key: "semiuri.33ab",
        check: |m| {
            let uri = sip_uri(m);
            assert_eq!((uri.user.as_deref(), uri.host.as_str()), (Some("agent;ext=u%40example.org"), "gw.example.com"));
            assert!(uri.params.is_empty());
            assert_eq!(m.header("Accept"), Some("application/sdp, message/sipfrag, multipart/mixed, text/plain"));
        },
    },
    Case {
        name: "transports",
        section: "3.1.1.10",
        tests: "Via transports UDP, SCTP, TLS, TCP and one nobody knows",
        outcome: Processed(200),
        key: "transports.kk18@carrier.example.net",
        check: |m| {
            let t: Vec<String> = vias(m).into_iter().map(|v| v.transport).collect();
            assert_eq!(t, ["UDP", "SCTP", "TLS", "PIGEON", "TCP"]);
        },
    },
    Case {
        name: "mpart01",
        section: "3.1.1.11",
        tests: "a multipart body whose binary part holds NULs, bare CRs and a CRLFCRLF",
        // MESSAGE is not a method the gateway implements.
        outcome: Processed(501),
        key: "mpart01.c0ffee@192.0.2.49",
        check: |m| {
            content_length_matches_body(m);
            assert!(m.body.ends_with(b"--torture-boundary-4475--\r\n"));
            assert!(m.body.windows(3).any(|w| w == [0, 13, 0]));
        },
    },
    Case {
        name: "unreason",
        section: "3.1.1.12",
        tests: "a reason phrase with UTF-8, symbols and punctuation",
        outcome: StrayResponse,
        key: "unreason.9zz1@192.0.2.50",
        check: |m| {
            let StartLine::Response { code, reason } = &m.start else { panic!("a response") };
            assert_eq!((*code, reason.as_str()), (200, "OK \u{2260} KO, 100 % s\u{fb}r \u{2014} \u{7d20}\u{6674}\u{3089}\u{3057}\u{3044} (really!)"));
        },
    },
    Case {
        name: "noreason",
        section: "3.1.1.13",
        tests: "an empty reason phrase",
        outcome: StrayResponse,
        key: "noreason.77q@192.0.2.51",
        check: |m| assert_eq!(m.start, StartLine::Response { code: 183, reason: String::new() }),
    },
    // §3.1.2 Invalid messages: answered 400 (or 505), responses dropped.
    Case {
        name: "badinv01",
        section: "3.1.2.1",
        tests: "extra ; and , without parameters or values in Via and Contact",
        outcome: Rejected(400, "Via"),
        key: "badinv01.qq81@192.0.2.52",
        check: no_check,
    },
    Case {
        name: "clerr",
        section: "3.1.2.2",
        tests: "Content-Length larger than the datagram (over TCP: waits for more, closed at end of stream)",
        outcome: Rejected(400, "shorter than Content-Length"),
        key: "clerr.k2k2@192.0.2.53",
        check: |m| assert!(m.body.starts_with(b"v=0"), "the body received is kept"),
    },
    Case {
        name: "ncl",
        section: "3.1.2.3",
        tests: "a negative Content-Length (over TCP: the stream cannot be framed and is closed)",
        outcome: Rejected(400, "Content-Length"),
        key: "ncl.x0x0@192.0.2.54",
        check: no_check,
    },
    Case {
        name: "scalar02",
        section: "3.1.2.4",
        tests: "overlarge CSeq, Max-Forwards, Expires and Contact expires in a request",
        outcome: Rejected(400, "(CSeq)"),
        key: "scalar02.b1g@192.0.2.55",
        check: |m| assert!(CSeq::parse(m.header("CSeq").unwrap()).is_none()),
    },
    Case {
        name: "scalarlg",
        section: "3.1.2.5",
        tests: "overlarge Retry-After and Warning code in a response",
        outcome: StrayResponse,
        key: "scalarlg.r3try@192.0.2.56",
        check: |m| assert_eq!(m.status(), Some(503)),
    },
    Case {
        name: "quotbal",
        section: "3.1.2.6",
        tests: "an unterminated quoted display name",
        outcome: Rejected(400, "(To)"),
        key: "quotbal.open@192.0.2.57",
        check: no_check,
    },
    Case {
        name: "ltgtruri",
        section: "3.1.2.7",
        tests: "a Request-URI enclosed in < >",
        outcome: Rejected(400, "Request-URI"),
        key: "ltgtruri.angle@192.0.2.58",
        check: no_check,
    },
    Case {
        name: "lwsruri",
        section: "3.1.2.8",
        tests: "white space inside the Request-URI",
        outcome: Rejected(400, "Request-URI"),
        key: "lwsruri.gap@192.0.2.59",
        check: |m| assert_eq!(m.flaws, [ParseError::RequestUri]),
    },
    Case {
        name: "lwsstart",
        section: "3.1.2.9",
        tests: "several SP between the Request-Line elements",
        outcome: Rejected(400, "start line"),
        key: "lwsstart.wide@192.0.2.60",
        check: |m| assert_eq!(m.request_uri(), Some("sip:+14155550100@gw.example.com")),
    },
    Case {
        name: "trws",
        section: "3.1.2.10",
        tests: "SP after the SIP-Version at the end of the Request-Line",
        outcome: Rejected(400, "start line"),
        key: "trws.tail@192.0.2.61",
        check: no_check,
    },
    Case {
        name: "escruri",
        section: "3.1.2.11",
        tests: "escaped headers (?Route=...) in the Request-URI",
        outcome: Rejected(400, "Request-URI has headers"),
        key: "escruri.hdr@192.0.2.62",
        check: no_check,
    },
    Case {
        name: "baddate",
        section: "3.1.2.12",
        tests: "a Date in a time zone other than GMT (ignored: the gateway never uses or echoes Date)",
        outcome: Processed(404),
        key: "baddate.pst@192.0.2.63",
        check: |m| assert!(m.header("Date").unwrap().ends_with("PST")),
    },
    Case {
        name: "regbadct",
        section: "3.1.2.13",
        tests: "a Contact URI with headers (?) not enclosed in < >",
        outcome: Rejected(400, "Contact"),
        key: "regbadct.noangle@192.0.2.64",
        check: no_check,
    },
    Case {
        name: "badaspec",
        section: "3.1.2.14",
        tests: "white space inside the < > of a name-addr",
        outcome: Rejected(400, "(To)"),
        key: "badaspec.sp@192.0.2.65",
        check: no_check,
    },
    Case {
        name: "baddn",
        section: "3.1.2.15",
        tests: "a comma in an unquoted display name",
        outcome: Rejected(400, "(From)"),
        key: "baddn.comma@192.0.2.66",
        check: no_check,
    },
    Case {
        name: "badvers",
        section: "3.1.2.16",
        tests: "SIP/3.0 in the Request-Line",
        outcome: Rejected(505, "Version Not Supported"),
        key: "badvers.v3@192.0.2.67",
        check: |m| assert_eq!(m.flaws, [ParseError::Version]),
    },
    Case {
        name: "mismatch01",
        section: "3.1.2.17",
        tests: "an OPTIONS whose CSeq names INVITE",
        outcome: Rejected(400, "CSeq method"),
        key: "mismatch01.m1@192.0.2.68",
        check: no_check,
    },
    Case {
        name: "mismatch02",
        section: "3.1.2.18",
        tests: "an unknown method whose CSeq names INVITE (400; RFC 4475 also allows 501)",
        outcome: Rejected(400, "CSeq method"),
        key: "mismatch02.m2@192.0.2.69",
        check: no_check,
    },
    Case {
        name: "bigcode",
        section: "3.1.2.19",
        tests: "a ten-digit response code",
        outcome: Unparsable(ParseError::StartLine),
        key: "bigcode.huge@192.0.2.70",
        check: no_check,
    },
    // §3.2 Transaction layer.
    Case {
        name: "badbranch",
        section: "3.2.1",
        tests: "a Via branch that is the RFC 3261 magic cookie alone",
        outcome: Rejected(400, "branch"),
        key: "badbranch.cookie@192.0.2.71",
        check: |m| assert_eq!(vias(m)[0].branch(), Some("z9hG4bK")),
    },
    // §3.3 Application layer.
    Case {
        name: "insuf",
        section: "3.3.1",
        tests: "no Call-ID, From or To",
        outcome: Rejected(400, "Call-ID"),
        key: "z9hG4bKinsuf",
        check: |m| assert!(m.header("Call-ID").is_none() && m.header("From").is_none() && m.header("To").is_none()),
    },
    Case {
        name: "unkscm",
        section: "3.3.2",
        tests: "a Request-URI scheme nobody knows",
        outcome: Rejected(416, "Unsupported URI Scheme"),
        key: "unkscm.opaque@192.0.2.73",
        check: |m| assert_eq!(m.request_uri(), Some("neverHeardOfThisScheme:an-opaque-thing-here")),
    },
    Case {
        name: "novelsc",
        section: "3.3.3",
        tests: "a registered Request-URI scheme (soap.beeps) that is no SIP or telephone URI",
        outcome: Rejected(416, "Unsupported URI Scheme"),
        key: "novelsc.beeps@192.0.2.74",
        check: no_check,
    },
    Case {
        name: "unksm2",
        section: "3.3.4",
        tests: "non-SIP URI schemes in To, From and Contact (a REGISTER: the address of record is no SIP URI)",
        outcome: Rejected(400, "address of record"),
        key: "unksm2.isbn@192.0.2.75",
        check: |m| {
            assert_eq!(name_addr(m, "To").uri, "isbn:9780262510875");
            assert_eq!(name_addr(m, "From").uri, "https://www.example.org/ann");
            assert_eq!(name_addr(m, "Contact").uri, "name:Ann_Tester");
        },
    },
    Case {
        name: "bext01",
        section: "3.3.5",
        tests: "unknown extensions in Require and Proxy-Require (420 lists the Require one in Unsupported)",
        outcome: Rejected(420, "Bad Extension"),
        key: "bext01.ext@192.0.2.76",
        check: no_check,
    },
    Case {
        name: "invut",
        section: "3.3.6",
        tests: "an INVITE body of a type nobody knows (415 with Accept)",
        outcome: Rejected(415, "Unsupported Media Type"),
        key: "invut.fmt@192.0.2.77",
        check: content_length_matches_body,
    },
    Case {
        name: "regaut01",
        section: "3.3.7",
        tests: "an Authorization scheme nobody knows (challenged again)",
        outcome: Processed(401),
        key: "regaut01.auth@192.0.2.78",
        check: |m| assert!(m.header("Authorization").unwrap().starts_with("MadeUpScheme ")),
    },
    Case {
        name: "multi01",
        section: "3.3.8",
        tests: "two values each of Call-ID, To, From, Max-Forwards and CSeq",
        outcome: Rejected(400, "more than one"),
        key: "multi01.first@192.0.2.79",
        check: no_check,
    },
    Case {
        name: "mcl01",
        section: "3.3.9",
        tests: "two different Content-Length values (over TCP: the stream cannot be framed and is closed)",
        outcome: Rejected(400, "Content-Length"),
        key: "mcl01.twice@192.0.2.80",
        check: no_check,
    },
    Case {
        name: "bcast",
        section: "3.3.10",
        tests: "a 200 OK whose second Via is the broadcast address",
        outcome: StrayResponse,
        key: "bcast.everyone@192.0.2.81",
        check: |m| assert_eq!(vias(m)[1].host, "255.255.255.255"),
    },
    Case {
        name: "zeromf",
        section: "3.3.11",
        tests: "Max-Forwards 0 on a request for the gateway itself (processed; an INVITE would get 483)",
        outcome: Processed(200),
        key: "zeromf.nohops@192.0.2.82",
        check: |m| assert_eq!(m.header("Max-Forwards"), Some("0")),
    },
    Case {
        name: "cparam01",
        section: "3.3.12",
        tests: "a bare Contact URI whose parameter belongs to the header, not the URI",
        outcome: Processed(401),
        key: "cparam01.hdr@192.0.2.83",
        check: |m| {
            let c = name_addr(m, "Contact");
            assert_eq!(c.uri, "sip:+14155550177@192.0.2.83");
            assert_eq!(c.params, [("private-flag".to_owned(), None)]);
        },
    },
    Case {
        name: "cparam02",
        section: "3.3.13",
        tests: "a Contact URI in < > with a parameter of the URI",
        outcome: Processed(401),
        key: "cparam02.uri@192.0.2.84",
        check: |m| {
            let c = name_addr(m, "Contact");
            assert!(c.params.is_empty());
            assert_eq!(SipUri::parse(&c.uri).unwrap().params, [("private-flag".to_owned(), None)]);
        },
    },
    Case {
        name: "regescrt",
        section: "3.3.14",
        tests: "a Contact URI in < > carrying an escaped Route header",
        outcome: Processed(401),
        key: "regescrt.route@192.0.2.85",
        check: |m| assert_eq!(name_addr(m, "Contact").uri, "sip:ann@192.0.2.85?Route=%3Csip:edge.example.net%3E"),
    },
    Case {
        name: "sdp01",
        section: "3.3.15",
        tests: "an INVITE whose Accept excludes SDP (406)",
        outcome: Rejected(406, "Not Acceptable"),
        key: "sdp01.accept@192.0.2.86",
        check: no_check,
    },
    // §3.4 Backward compatibility.
    Case {
        name: "inv2543",
        section: "3.4.1",
        tests: "RFC 2543 style: no branch, no From tag, no Max-Forwards, no Content-Length (body to the end of the datagram)",
        outcome: Processed(404),
        key: "inv2543.old@192.0.2.87",
        check: |m| {
            assert_eq!(vias(m)[0].branch(), None);
            assert_eq!(name_addr(m, "From").tag(), None);
            assert!(m.header("Content-Length").is_none() && m.header("Max-Forwards").is_none());
            assert!(m.body.starts_with(b"v=0\r\n") && m.body.ends_with(b"\r\n"));
        },
    },
];

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/torture")
}

fn load(name: &str) -> Vec<u8> {
    std::fs::read(dir().join(format!("{name}.sip"))).unwrap_or_else(|e| panic!("{name}.sip: {e}"))
}

fn case(name: &str) -> &'static Case {
    CASES.iter().find(|c| c.name == name).unwrap_or_else(|| panic!("no case {name}"))
}

/// What a received message answers: its Call-ID, or its top Via branch.
fn key_of(m: &SipMessage) -> String {
    match m.header("Call-ID") {
        Some(id) => id.to_owned(),
        None => m.header_values("Via").first().and_then(|v| Via::parse(v)).and_then(|v| v.branch().map(str::to_owned)).unwrap_or_default(),
    }
}

#[test]
fn torture_suite_holds_every_rfc_4475_case_once() {
    assert_eq!(CASES.len(), 49, "RFC 4475 §3 has 49 messages");
    let mut on_disk: Vec<String> = std::fs::read_dir(dir())
        .unwrap()
        .filter_map(|e| e.unwrap().file_name().into_string().ok())
        .filter_map(|f| f.strip_suffix(".sip").map(str::to_owned))
        .collect();
    on_disk.sort();
    let mut named: Vec<String> = CASES.iter().map(|c| c.name.to_owned()).collect();
    named.sort();
    named.dedup();
    assert_eq!(on_disk, named, "one file per case, one case per file");
    for c in CASES {
        let bytes = load(c.name);
        let key = c.key.as_bytes();
        assert!(bytes.windows(key.len()).any(|w| w == key), "{}: its key is in the message", c.name);
        assert!(!c.tests.is_empty() && c.section.starts_with('3'), "{}", c.name);
    }
}

#[test]
fn torture_cases_parse_and_validate_as_expected() {
    let mut failures = Vec::new();
    for c in CASES {
        let bytes = load(c.name);
        let parsed = SipMessage::parse(&bytes, MAX);
        let verdict = parsed.as_ref().ok().filter(|m| m.is_request()).map(validate_request);
        let problem = match (&c.outcome, &parsed, &verdict) {
            (Processed(_), Ok(m), Some(Ok(_))) if m.flaws.is_empty() => None,
            (Rejected(code, why), Ok(_), Some(Err(r))) if r.code == *code && r.reason.contains(why) => None,
            (StrayResponse, Ok(m), None) if !m.is_request() => None,
            (Unparsable(e), Err(got), _) if got == e => None,
            _ => Some(format!("expected {:?}, got {:?} validated as {:?}", c.outcome, parsed, verdict)),
        };
        if let Some(p) = problem {
            failures.push(format!("{} (§{}): {p}", c.name, c.section));
            continue;
        }
        let Ok(m) = parsed else { continue };
        if let Err(panic) = catch_unwind(AssertUnwindSafe(|| (c.check)(&m))) {
            let text = panic.downcast_ref::<String>().cloned().or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()));
            failures.push(format!("{} (§{}): {}", c.name, c.section, text.unwrap_or_default()));
            continue;
        }
        // What the gateway writes of an accepted message reads back the same.
        if let Processed(_) = c.outcome {
            let again = SipMessage::parse(&m.encode(), MAX).expect("the encoding parses");
            let without_length = |m: &SipMessage| m.headers.iter().filter(|(n, _)| n != "Content-Length").cloned().collect::<Vec<_>>();
            if (again.start != m.start) || without_length(&again) != without_length(&m) || again.body != m.body {
                failures.push(format!("{}: the encoding does not read back the same", c.name));
            }
            if validate_request(&again).is_err() {
                failures.push(format!("{}: the encoding does not validate", c.name));
            }
        }
        // A refused request can always be answered: the answer carries
        // what the client matches it by.
        if let (Rejected(code, _), true) = (&c.outcome, m.is_request()) {
            let r = make_response(&m, *code, Some("t"), "torture");
            let echoed = SipMessage::parse(&r.encode(), MAX).expect("the answer parses");
            if echoed.status() != Some(*code) || key_of(&echoed) != c.key || echoed.header("CSeq") != m.header("CSeq") {
                failures.push(format!("{}: the {code} answer does not match the request: {echoed:?}", c.name));
            }
        }
    }
    assert!(failures.is_empty(), "{} of {} cases failed:\n{}", failures.len(), CASES.len(), failures.join("\n"));
}

#[test]
fn torture_no_prefix_of_any_case_panics() {
    for c in CASES {
        let bytes = load(c.name);
        for cut in 0..=bytes.len() {
            let prefix = &bytes[..cut];
            if let Ok(m) = SipMessage::parse(prefix, MAX) {
                if validate_request(&m).is_err() {
                    let _ = make_response(&m, 400, Some("t"), "torture").encode();
                }
                let _ = SipMessage::parse(&m.encode(), MAX);
            }
            match frame_length(prefix, MAX) {
                Frame::Message(n) | Frame::KeepAlive(n) => assert!(n <= prefix.len(), "{}: frame past the end", c.name),
                Frame::Incomplete | Frame::Invalid(_) => {}
            }
        }
    }
}

/// A gateway on loopback UDP and TCP with an empty directory, so every
/// dialled number is unknown (404).
async fn start(dir: &std::path::Path) -> (switchboard_gateway::RunningGateway, CancellationToken) {
    let db = Database::connect(&format!("sqlite://{}", dir.join("sb.db").display())).await.unwrap();
    db.migrate().await.unwrap();
    let mut config = GatewayConfig::default();
    // The test's SIPp/sockets on 127.0.0.1 play the carrier.
    config.sip.trunks = vec![switchboard_gateway::config::TrunkConfig {
        name: "test-carrier".into(),
        inbound_from: vec!["127.0.0.1/32".into()],
        ..Default::default()
    }];
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    config.sip.udp = Some(any);
    config.sip.tcp = Some(any);
    config.http.listen = any;
    let base = switchboard_test_support::ports::gateway_media_range(10);
    config.media.port_min = base;
    config.media.port_max = base + 9;
    let shutdown = CancellationToken::new();
    let gw = Gateway::start(config, dir.to_owned(), db, shutdown.clone()).await.unwrap();
    (gw, shutdown)
}

/// An OPTIONS for the gateway itself, identified by `tag`.
fn probe(tag: &str) -> Vec<u8> {
    format!(
        "OPTIONS sip:gw.example.com SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1;branch=z9hG4bKprobe-{tag}\r\nFrom: <sip:probe@example.net>;tag=p\r\nTo: <sip:gw.example.com>\r\nCall-ID: probe-{tag}\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

/// The ACK for a final non-2xx answer to `invite` (RFC 3261 §17.1.1.3),
/// which stops the gateway retransmitting it.
fn ack(invite: &SipMessage, answer: &SipMessage) -> Vec<u8> {
    let mut a = SipMessage::request("ACK", invite.request_uri().unwrap());
    a.push_header("Via", invite.header_values("Via")[0]);
    a.push_header("From", invite.header("From").unwrap());
    a.push_header("To", answer.header("To").unwrap());
    a.push_header("Call-ID", invite.header("Call-ID").unwrap());
    a.push_header("CSeq", format!("{} ACK", CSeq::parse(invite.header("CSeq").unwrap()).unwrap().seq));
    a.push_header("Max-Forwards", "70");
    a.encode()
}

/// Everything the gateway sent to one UDP socket, in order.
struct UdpPeer {
    sock: UdpSocket,
    gateway: SocketAddr,
    received: Vec<SipMessage>,
}

impl UdpPeer {
    async fn send(&self, bytes: &[u8]) {
        self.sock.send_to(bytes, self.gateway).await.unwrap();
    }

    /// Receives until a final answer carrying `key` arrives (provisional
    /// answers and late answers to earlier cases are kept in the log).
    async fn final_for(&mut self, key: &str) -> SipMessage {
        let mut buf = vec![0u8; 65_536];
        loop {
            let n = tokio::time::timeout(WAIT, self.sock.recv(&mut buf))
                .await
                .unwrap_or_else(|_| panic!("no final answer for {key} within {WAIT:?}"))
                .unwrap();
            let m = SipMessage::parse(&buf[..n], MAX).expect("the gateway sends what it can parse");
            self.received.push(m.clone());
            if key_of(&m) == key && m.status().is_some_and(|s| s >= 200) {
                return m;
            }
        }
    }

    /// Sends a probe and awaits its 200: everything the gateway did with
    /// what was sent before is then done (it handles one socket's
    /// datagrams in order). Returns what arrived meanwhile.
    async fn probe(&mut self, tag: &str) -> Vec<SipMessage> {
        let before = self.received.len();
        self.send(&probe(tag)).await;
        let ok = self.final_for(&format!("probe-{tag}")).await;
        assert_eq!(ok.status(), Some(200), "the gateway still answers OPTIONS after {tag}");
        self.received[before..self.received.len() - 1].to_vec()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn torture_over_udp_every_case_is_answered_or_dropped_as_expected() {
    let dir = tempfile::tempdir().unwrap();
    let (gw, shutdown) = start(dir.path()).await;
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut peer = UdpPeer { sock, gateway: gw.sip_udp.unwrap(), received: Vec::new() };
    let mut failures = Vec::new();
    for c in CASES {
        let bytes = load(c.name);
        peer.send(&bytes).await;
        match c.outcome {
            Processed(code) | Rejected(code, _) => {
                let answer = peer.final_for(c.key).await;
                if answer.status() != Some(code) {
                    failures.push(format!("{}: answered {:?}, expected {code}", c.name, answer.start));
                }
                let request = SipMessage::parse(&bytes, MAX).unwrap();
                if matches!(c.outcome, Processed(_)) && request.method() == Some("INVITE") {
                    peer.send(&ack(&request, &answer)).await;
                }
                let extra = match c.name {
                    "bext01" => answer.header("Unsupported") == Some("no-such-extension"),
                    "invut" => answer.header("Accept") == Some("application/sdp"),
                    "baddate" => answer.header("Date").is_none(),
                    "insuf" => answer.header("CSeq") == Some("29 INVITE"),
                    _ => true,
                };
                if !extra {
                    failures.push(format!("{}: the answer lacks what the case requires: {:?}", c.name, answer.headers));
                }
            }
            StrayResponse | Unparsable(_) => {
                let meanwhile = peer.probe(c.name).await;
                if let Some(m) = meanwhile.iter().find(|m| key_of(m) == c.key) {
                    failures.push(format!("{}: should be dropped, was answered {:?}", c.name, m.start));
                }
            }
        }
    }
    peer.probe("after-all-cases").await;
    // Nothing arrived that answers something that must not be answered,
    // such as the request after the end of dblreq's datagram.
    let answerable: Vec<&str> =
        CASES.iter().filter(|c| matches!(c.outcome, Processed(_) | Rejected(..))).map(|c| c.key).collect();
    for m in &peer.received {
        let key = key_of(m);
        if !answerable.contains(&key.as_str()) && !key.starts_with("probe-") {
            failures.push(format!("unexpected message {m:?}"));
        }
    }
    shutdown.cancel();
    tokio::time::timeout(WAIT, gw.wait()).await.expect("the gateway stops").expect("no gateway task panicked");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Reads whole messages from a stream until `done` says enough.
async fn read_stream(stream: &mut TcpStream, mut done: impl FnMut(&[SipMessage]) -> bool) -> Vec<SipMessage> {
    let (mut buf, mut got) = (Vec::new(), Vec::new());
    let mut chunk = vec![0u8; 16_384];
    while !done(&got) {
        let n = tokio::time::timeout(WAIT, stream.read(&mut chunk)).await.expect("answers within the wait").unwrap();
        assert!(n > 0, "the gateway closed the stream; got {got:?}");
        buf.extend_from_slice(&chunk[..n]);
        while let Frame::Message(len) | Frame::KeepAlive(len) = frame_length(&buf, MAX) {
            let frame: Vec<u8> = buf.drain(..len).collect();
            if let Ok(m) = SipMessage::parse(&frame, MAX) {
                got.push(m);
            }
        }
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn torture_over_tcp_one_stream_frames_every_message_by_its_content_length() {
    let dir = tempfile::tempdir().unwrap();
    let (gw, shutdown) = start(dir.path()).await;
    let mut stream = TcpStream::connect(gw.sip_tcp.unwrap()).await.unwrap();
    // One write: the gateway must cut it by Content-Length (spaced and
    // compact names, a binary body with a CRLFCRLF inside, two messages of
    // dblreq, which on a stream are both answered).
    let names = ["wsinv", "mpart01", "dblreq", "longreq", "esc01", "insuf", "unkscm"];
    let mut all: Vec<u8> = b"\r\n\r\n".to_vec();
    for n in names {
        all.extend(load(n));
    }
    all.extend(probe("tcp"));
    stream.write_all(&all).await.unwrap();
    let mut expected: Vec<(String, u16)> = names
        .iter()
        .map(|n| {
            let c = case(n);
            let (Processed(code) | Rejected(code, _)) = c.outcome else { panic!("{n} is answered") };
            (c.key.to_owned(), code)
        })
        .collect();
    expected.push(("dblreq.ghost.0043@192.0.2.45".to_owned(), 404));
    expected.push(("probe-tcp".to_owned(), 200));
    let is_final = |m: &SipMessage| m.status().is_some_and(|s| s >= 200);
    let got = read_stream(&mut stream, |got| {
        expected.iter().all(|(key, _)| got.iter().any(|m| is_final(m) && key_of(m) == *key))
    })
    .await;
    let mut answered: Vec<(String, u16)> = got.iter().filter(|m| is_final(m)).map(|m| (key_of(m), m.status().unwrap())).collect();
    answered.sort();
    answered.dedup();
    expected.sort();
    assert_eq!(answered, expected);
    shutdown.cancel();
    tokio::time::timeout(WAIT, gw.wait()).await.expect("the gateway stops").expect("no gateway task panicked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn torture_over_tcp_an_unframeable_stream_is_closed_unanswered() {
    let dir = tempfile::tempdir().unwrap();
    let (gw, shutdown) = start(dir.path()).await;
    let tcp = gw.sip_tcp.unwrap();
    // Negative, ambiguous or missing Content-Length: the stream cannot be
    // cut any more. Too large: the gateway waits for the rest of the body,
    // and the sender ends the stream first.
    for (name, end_stream) in [("ncl", false), ("mcl01", false), ("inv2543", false), ("clerr", true)] {
        let mut stream = TcpStream::connect(tcp).await.unwrap();
        stream.write_all(&load(name)).await.unwrap();
        if end_stream {
            stream.shutdown().await.unwrap();
        }
        let mut got = Vec::new();
        let closed = tokio::time::timeout(WAIT, stream.read_to_end(&mut got)).await;
        match closed {
            Ok(Ok(_)) => {}
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
            other => panic!("{name}: the gateway did not close the stream: {other:?}"),
        }
        assert!(got.is_empty(), "{name}: no answer on a stream that cannot be framed, got {:?}", String::from_utf8_lossy(&got));
    }
    // The listener lives on.
    let mut stream = TcpStream::connect(tcp).await.unwrap();
    stream.write_all(&probe("tcp-after")).await.unwrap();
    let got = read_stream(&mut stream, |got| !got.is_empty()).await;
    assert_eq!((key_of(&got[0]).as_str(), got[0].status()), ("probe-tcp-after", Some(200)));
    shutdown.cancel();
    tokio::time::timeout(WAIT, gw.wait()).await.expect("the gateway stops").expect("no gateway task panicked");
}
