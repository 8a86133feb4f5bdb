//! Who is calling the agent API. The authentication layer that puts a
//! [`Principal`] into each request comes with the agent API's sessions;
//! handlers behind it take the principal with `Extension<Principal>`.

use serde::{Deserialize, Serialize};

/// The signed-in user of a request, put into the request's extensions by
/// the authentication layer; handlers take it with
/// `Extension<Principal>`, so a route outside the layer cannot compile
/// into using one.
#[derive(Debug, Clone)]
pub struct Principal {
    pub user_id: String,
    pub session_id: String,
    pub role: Role,
}

impl Principal {
    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }
}

/// What a signed-in user may do beyond its own calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Agent,
    /// Also sees admin-only recordings (F7).
    Admin,
}
