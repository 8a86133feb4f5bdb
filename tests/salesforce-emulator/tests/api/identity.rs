//! Who a token acts for: the UserInfo endpoint and identity URLs.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::web_server::{field, Flow, AGENT};

/// Status and body of an identity request with `token` (none when empty).
async fn get(flow: &Flow, url: &str, token: &str) -> (StatusCode, String) {
    let mut request = flow.browser.get(url);
    if !token.is_empty() {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.expect("identity request");
    let status = response.status();
    (status, response.text().await.expect("body"))
}

fn json_of(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

fn userinfo_url(flow: &Flow) -> String {
    flow.org.emulator.userinfo_url()
}

#[tokio::test]
async fn userinfo_answers_for_the_token_user() {
    let flow = Flow::start().await;
    let emulator = &flow.org.emulator;
    let tokens = flow.exchange(&flow.code().await, &[]).await;
    let access = field(&tokens, "access_token");

    let (status, body) = get(&flow, &userinfo_url(&flow), access).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let info = json_of(&body);
    assert_eq!(info["sub"], field(&tokens, "id"));
    assert_eq!(info["user_id"], flow.agent_id.as_str());
    assert_eq!(info["organization_id"], emulator.org_id().as_str());
    assert_eq!(info["user_id"].as_str().map(str::len), Some(18));
    assert_eq!(info["organization_id"].as_str().map(str::len), Some(18));
    assert_eq!(info["preferred_username"], AGENT);
    assert_eq!(info["email"], AGENT);
    assert_eq!(info["name"], "agent");
    assert_eq!(info["family_name"], "agent");
    assert_eq!(info["given_name"], Value::Null);
    assert_eq!(info["nickname"], "agent");
    assert_eq!(info["active"], true);
    assert_eq!(info["user_type"], "STANDARD");
    assert_eq!(info["email_verified"], true);
    assert_eq!(
        info["urls"]["rest"],
        format!("{}/services/data/v{{version}}/", emulator.url())
    );
    assert!(info["updated_at"]
        .as_str()
        .is_some_and(|t| t.len() == 20 && t.ends_with('Z')));

    // The token as a parameter, by POST, and a version for the URLs.
    let response = flow
        .browser
        .post(userinfo_url(&flow))
        .form(&[("oauth_token", access), ("version", "latest")])
        .send()
        .await
        .expect("userinfo");
    assert_eq!(response.status(), StatusCode::OK);
    let info: Value = response.json().await.expect("json");
    assert_eq!(
        info["urls"]["sobjects"],
        format!("{}/services/data/v62.0/sobjects/", emulator.url())
    );
    let (status, body) = get(
        &flow,
        &format!("{}?version=10.0", userinfo_url(&flow)),
        access,
    )
    .await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::NOT_ACCEPTABLE, "Invalid_Version")
    );

    // A JWT bearer token is a token too: the integration user.
    let jwt = flow.org.token().await;
    let (status, body) = get(&flow, &userinfo_url(&flow), &jwt).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let info = json_of(&body);
    assert_eq!(info["user_id"], emulator.user_id().as_str());
    assert_eq!(info["name"], "Switchboard Integration");
    assert_eq!(info["given_name"], "Switchboard");
}

#[tokio::test]
async fn bad_tokens_get_the_identity_service_errors() {
    let flow = Flow::start().await;
    let url = userinfo_url(&flow);
    assert_eq!(
        get(&flow, &url, "").await,
        (StatusCode::FORBIDDEN, "Missing_OAuth_Token".to_owned())
    );
    assert_eq!(
        get(&flow, &url, "00Dnot!atoken").await,
        (StatusCode::FORBIDDEN, "Bad_OAuth_Token".to_owned())
    );
    let tokens = flow.exchange(&flow.code().await, &[]).await;
    let access = field(&tokens, "access_token");
    assert_eq!(
        flow.revoke(field(&tokens, "refresh_token")).await,
        StatusCode::OK
    );
    assert_eq!(
        get(&flow, &url, access).await,
        (StatusCode::FORBIDDEN, "Bad_OAuth_Token".to_owned())
    );
    let tokens = flow.exchange(&flow.code().await, &[]).await;
    flow.org.emulator.expire_tokens();
    assert_eq!(
        get(&flow, field(&tokens, "id"), field(&tokens, "access_token")).await,
        (StatusCode::FORBIDDEN, "Bad_OAuth_Token".to_owned())
    );
}

#[tokio::test]
async fn the_identity_url_answers_with_salesforce_names() {
    let flow = Flow::start().await;
    let emulator = &flow.org.emulator;
    let tokens = flow.exchange(&flow.code().await, &[]).await;
    let access = field(&tokens, "access_token");
    let id = field(&tokens, "id");

    let (status, body) = get(&flow, id, access).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let identity = json_of(&body);
    assert_eq!(identity["id"], id);
    assert_eq!(identity["asserted_user"], true);
    assert_eq!(identity["user_id"], flow.agent_id.as_str());
    assert_eq!(identity["organization_id"], emulator.org_id().as_str());
    assert_eq!(identity["username"], AGENT);
    assert_eq!(identity["display_name"], "agent");
    assert_eq!(identity["last_name"], "agent");
    assert_eq!(identity["active"], true);

    // Another user of the org, with an `api` token.
    let other = format!(
        "{}/id/{}/{}",
        emulator.url(),
        emulator.org_id(),
        emulator.user_id()
    );
    let (status, body) = get(&flow, &other, access).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(json_of(&body)["asserted_user"], false);
    // … but not with a token for `openid` only.
    let openid = flow
        .exchange(&flow.code_for(&[("scope", "openid")]).await, &[])
        .await;
    assert_eq!(
        get(&flow, &other, field(&openid, "access_token")).await,
        (StatusCode::NOT_FOUND, "No_Access".to_owned())
    );
    // 15-character ids are read as well.
    let short = format!(
        "{}/id/{}/{}",
        emulator.url(),
        &emulator.org_id()[..15],
        &flow.agent_id[..15]
    );
    assert_eq!(get(&flow, &short, access).await.0, StatusCode::OK);

    let wrong_org = format!("{}/id/00D5g0000000zzzEAA/{}", emulator.url(), flow.agent_id);
    assert_eq!(
        get(&flow, &wrong_org, access).await,
        (StatusCode::FORBIDDEN, "Wrong_Org".to_owned())
    );
    for user in ["0055g0000000zzz", "not-an-id"] {
        let url = format!("{}/id/{}/{user}", emulator.url(), emulator.org_id());
        assert_eq!(
            get(&flow, &url, access).await,
            (StatusCode::NOT_FOUND, "Bad_Id".to_owned())
        );
    }
}

#[tokio::test]
async fn a_deactivated_user_is_inactive_everywhere() {
    let flow = Flow::start().await;
    let tokens = flow.exchange(&flow.code().await, &[]).await;
    let jwt = flow.org.token().await;
    let deactivated = flow
        .org
        .call(
            Method::PATCH,
            &format!("v62.0/sobjects/User/{}", flow.agent_id),
            &jwt,
            Some(json!({"IsActive": false})),
        )
        .await;
    assert_eq!(
        deactivated.status,
        StatusCode::NO_CONTENT,
        "{:?}",
        deactivated.body
    );
    assert_eq!(
        get(&flow, &userinfo_url(&flow), field(&tokens, "access_token")).await,
        (StatusCode::NOT_FOUND, "Inactive".to_owned())
    );
    let refreshed = flow.refresh(field(&tokens, "refresh_token"), &[]).await;
    assert_eq!(refreshed.status, StatusCode::BAD_REQUEST);
    assert_eq!(refreshed.body["error"], "inactive_user");
    // Nor can they sign in.
    let response = flow.authorize(&[]).await;
    assert_eq!(response.status(), StatusCode::OK);
}
