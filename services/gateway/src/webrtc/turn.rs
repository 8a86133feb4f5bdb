//! TURN credentials for softphone pages, the TURN REST API way that coturn
//! checks with `use-auth-secret`: the username is `<expiry>:<user id>`
//! (Unix seconds), the password the base64 HMAC-SHA1 of the username under
//! the secret the gateway and the TURN servers share. Nothing is stored; a
//! page gets fresh ones with each registration.

use base64::Engine;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha1::Sha1;
use utoipa::ToSchema;

/// One entry of `RTCConfiguration.iceServers`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct IceServer {
    pub urls: Vec<String>,
    pub username: String,
    pub credential: String,
}

/// The TURN servers and their shared secret.
#[derive(Clone)]
pub struct Turn {
    pub urls: Vec<String>,
    pub secret: String,
    pub ttl_secs: u64,
}

impl std::fmt::Debug for Turn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Turn").field("urls", &self.urls).field("ttl_secs", &self.ttl_secs).finish_non_exhaustive()
    }
}

impl Turn {
    /// Credentials for `user_id` valid until `now_unix + ttl_secs`.
    pub fn credentials(&self, user_id: &str, now_unix: u64) -> IceServer {
        let username = format!("{}:{user_id}", now_unix + self.ttl_secs);
        let mut mac = Hmac::<Sha1>::new_from_slice(self.secret.as_bytes()).expect("HMAC takes a key of any length");
        mac.update(username.as_bytes());
        let credential = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
        IceServer { urls: self.urls.clone(), username, credential }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_the_turn_rest_api_ones() {
        let turn = Turn { urls: vec!["turn:127.0.0.1:3478?transport=udp".into()], secret: "north-wind".into(), ttl_secs: 3600 };
        let server = turn.credentials("user-1", 1_700_000_000 - 3600);
        assert_eq!(server.username, "1700000000:user-1");
        // base64(HMAC-SHA1("north-wind", "1700000000:user-1")), computed apart.
        assert_eq!(server.credential, "J6p8CSw12Z5tbkMIop6Y+dZUCKE=");
        assert_eq!(server.urls, turn.urls);
        assert!(!format!("{turn:?}").contains("north-wind"), "the secret stays out of logs");
    }
}
