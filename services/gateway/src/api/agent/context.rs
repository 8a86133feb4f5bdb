//! Salesforce context of a call (F10, F11, F14, F15): who the caller may
//! be, the record the agent says it is, the Cases and Opportunities it may
//! be assigned to, and the assignment. Every read goes to Salesforce with
//! the agent's own tokens, so an agent finds only what Salesforce shows it;
//! what the agent decides is recorded as a call event (`call.related`,
//! `call.assigned`) for the connector to write to Salesforce.

use axum::extract::State;
use axum::Extension;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::calls::control_problem;
use super::AgentApi;
use crate::api::auth::Principal;
use crate::api::problem::{Json, Path, Problem, Query};
use crate::calls::control::Assignment;
use crate::calls::live::{AssignmentView, RelatedRecord};
use crate::salesforce::context::{is_record_id, SearchError};
use crate::salesforce::{
    AgentGrant, CallerMatches, SalesforceError, SalesforceObject, WorkItem, WorkSearch,
};

/// Body of `PUT /v1/calls/{id}/related`.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"record_id": "003000000000001AAA"}))]
pub struct RelateTo {
    /// A Contact, Lead or Account id (15 or 18 characters).
    pub record_id: String,
}

/// Body of `PUT /v1/calls/{id}/assignment`: exactly one of the three.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"new_case": {"subject": "Invoice missing", "description": "Customer did not receive the March invoice"}}))]
pub struct AssignTo {
    #[serde(default)]
    pub case_id: Option<String>,
    #[serde(default)]
    pub opportunity_id: Option<String>,
    #[serde(default)]
    pub new_case: Option<NewCase>,
}

/// A Case the connector creates for the call.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewCase {
    /// 1 to 255 characters.
    pub subject: String,
    /// At most 32,000 characters.
    #[serde(default)]
    pub description: String,
}

/// Query of the Case and Opportunity searches.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct WorkQuery {
    /// Words of the subject, number or name (each a prefix). Without it,
    /// the newest records of `contact_id` or `account_id`.
    pub q: Option<String>,
    /// Cases of this Contact (Cases only).
    pub contact_id: Option<String>,
    /// Records of this Account.
    pub account_id: Option<String>,
    /// 1 to 200, default 20.
    pub limit: Option<usize>,
}

/// A search's answer.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct WorkItems {
    pub records: Vec<WorkItem>,
}

fn salesforce_problem(e: SalesforceError) -> Problem {
    match e {
        e @ SalesforceError::NotConnected => {
            Problem::conflict("salesforce_not_connected", e.to_string())
        }
        e @ SalesforceError::Expired(_) => Problem::conflict("salesforce_reconnect", e.to_string()),
        SalesforceError::Refused { status: 404, .. } => Problem::not_found(
            "record_not_found",
            "Salesforce has no such record, or does not show it to you",
        ),
        e @ SalesforceError::Refused { .. } => Problem::new(
            axum::http::StatusCode::BAD_GATEWAY,
            "salesforce_refused",
            e.to_string(),
        ),
        e @ SalesforceError::Unavailable(_) => {
            Problem::unavailable("salesforce_unavailable", e.to_string()).with_retry_after(5)
        }
        SalesforceError::Store(e) => Problem::internal("reading the session failed", &e),
    }
}

fn search_problem(e: SearchError) -> Problem {
    match e {
        SearchError::Invalid(detail) => Problem::bad_request("invalid_search", detail),
        SearchError::Salesforce(e) => salesforce_problem(e),
    }
}

impl AgentApi {
    async fn grant(&self, me: &Principal) -> Result<AgentGrant, Problem> {
        self.salesforce
            .api()
            .for_session(&me.session_id)
            .await
            .map_err(salesforce_problem)
    }
}

/// Who the caller may be (F14): Contacts, Leads and Accounts with the
/// customer's number that Salesforce shows the agent, all of them. The
/// event stream brings the same as `call.matched` while the call rings;
/// this asks again (a reload, or after `unavailable`).
#[utoipa::path(get, path = "/v1/calls/{id}/matches", tag = "salesforce", security(("session" = [])), params(("id" = String, Path, description = "call id")),
    responses((status = 200, body = CallerMatches), (status = 404, body = Problem, content_type = "application/problem+json")))]
pub async fn matches(
    State(api): State<AgentApi>,
    Extension(me): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Json<CallerMatches>, Problem> {
    let view = api.own_call(&me, &id)?;
    let number = match view.direction {
        crate::calls::live::CallDirection::Outbound => view.to_number.clone(),
        crate::calls::live::CallDirection::Inbound => view.from_number.clone(),
        crate::calls::live::CallDirection::Internal => {
            return Err(Problem::conflict(
                "internal_call",
                "an internal call has no customer to look up",
            ));
        }
    };
    let found = match api.salesforce.api().for_session(&me.session_id).await {
        Ok(grant) => api.salesforce.match_caller(&grant, &number).await,
        Err(e) => return Err(salesforce_problem(e)),
    };
    api.live.set_matches(&id, &me.user_id, found.clone());
    Ok(Json(found))
}

/// Relates the call to the Salesforce record the customer is (F15): one of
/// the matches or any Contact, Lead or Account the agent may see. During or
/// after the call; the last choice counts.
#[utoipa::path(put, path = "/v1/calls/{id}/related", tag = "salesforce", security(("session" = [])), params(("id" = String, Path, description = "call id"),
    ("Idempotency-Key" = Option<String>, Header, description = "repeats with the same key and body answer the first answer")),
    request_body = RelateTo,
    responses((status = 200, body = RelatedRecord), (status = 400, body = Problem, content_type = "application/problem+json"),
              (status = 404, description = "no such call of yours, or no such record you may see", body = Problem, content_type = "application/problem+json"),
              (status = 409, description = "not connected with Salesforce", body = Problem, content_type = "application/problem+json")))]
pub async fn relate(
    State(api): State<AgentApi>,
    Extension(me): Extension<Principal>,
    Path(id): Path<String>,
    Json(body): Json<RelateTo>,
) -> Result<Json<RelatedRecord>, Problem> {
    let object = SalesforceObject::of_id(&body.record_id)
        .filter(|o| {
            matches!(
                o,
                SalesforceObject::Contact | SalesforceObject::Lead | SalesforceObject::Account
            )
        })
        .ok_or_else(|| {
            Problem::bad_request(
                "invalid_record",
                "record_id must be the id of a Contact, Lead or Account",
            )
        })?;
    api.own_call_or_answered(&me, &id).await?;
    let mut grant = api.grant(&me).await?;
    let (_, name) = api
        .salesforce
        .record(&mut grant, &body.record_id)
        .await
        .map_err(search_problem)?;
    api.control
        .relate(&id, &me.user_id, &body.record_id, object.as_str(), &name)
        .await
        .map_err(control_problem)?;
    Ok(Json(RelatedRecord {
        record_id: body.record_id,
        object: object.as_str().to_owned(),
        name,
    }))
}

/// Assigns the call to an existing Case or Opportunity, or asks for a new
/// Case (created by the connector with the call's Task) (F10, F11). During
/// or after the call; the last assignment counts.
#[utoipa::path(put, path = "/v1/calls/{id}/assignment", tag = "salesforce", security(("session" = [])), params(("id" = String, Path, description = "call id"),
    ("Idempotency-Key" = Option<String>, Header, description = "repeats with the same key and body answer the first answer")),
    request_body = AssignTo,
    responses((status = 200, body = AssignmentView), (status = 400, body = Problem, content_type = "application/problem+json"),
              (status = 404, body = Problem, content_type = "application/problem+json"),
              (status = 409, description = "not connected with Salesforce", body = Problem, content_type = "application/problem+json")))]
pub async fn assign(
    State(api): State<AgentApi>,
    Extension(me): Extension<Principal>,
    Path(id): Path<String>,
    Json(body): Json<AssignTo>,
) -> Result<Json<AssignmentView>, Problem> {
    let given = [
        body.case_id.is_some(),
        body.opportunity_id.is_some(),
        body.new_case.is_some(),
    ]
    .iter()
    .filter(|g| **g)
    .count();
    if given != 1 {
        return Err(Problem::bad_request(
            "invalid_assignment",
            "give exactly one of case_id, opportunity_id and new_case",
        ));
    }
    let mut assignment = Assignment {
        assignment_id: uuid::Uuid::now_v7().to_string(),
        user_id: me.user_id.clone(),
        object: String::new(),
        record_id: String::new(),
        name: String::new(),
        subject: String::new(),
        description: String::new(),
    };
    if let Some(new_case) = &body.new_case {
        let subject = new_case.subject.trim();
        if subject.is_empty()
            || subject.chars().count() > 255
            || new_case.description.chars().count() > 32_000
        {
            return Err(Problem::bad_request("invalid_assignment", "a new Case needs a subject of 1 to 255 characters and a description of at most 32,000"));
        }
        api.own_call_or_answered(&me, &id).await?;
        // Only an agent connected with Salesforce may create Cases.
        api.grant(&me).await?;
        assignment.object = "Case".into();
        assignment.subject = subject.to_owned();
        assignment.description = new_case.description.clone();
    } else {
        let (record_id, want) = match (&body.case_id, &body.opportunity_id) {
            (Some(c), _) => (c, SalesforceObject::Case),
            (_, Some(o)) => (o, SalesforceObject::Opportunity),
            _ => unreachable!("exactly one was given"),
        };
        if SalesforceObject::of_id(record_id) != Some(want) {
            return Err(Problem::bad_request(
                "invalid_record",
                format!("`{record_id}` is not the id of a {}", want.as_str()),
            ));
        }
        api.own_call_or_answered(&me, &id).await?;
        let mut grant = api.grant(&me).await?;
        let (_, name) = api
            .salesforce
            .record(&mut grant, record_id)
            .await
            .map_err(search_problem)?;
        assignment.object = want.as_str().into();
        assignment.record_id = record_id.clone();
        assignment.name = name;
    }
    let view = AssignmentView {
        assignment_id: assignment.assignment_id.clone(),
        object: assignment.object.clone(),
        record_id: (!assignment.record_id.is_empty()).then(|| assignment.record_id.clone()),
        name: if assignment.record_id.is_empty() {
            assignment.subject.clone()
        } else {
            assignment.name.clone()
        },
    };
    api.control
        .assign(&id, assignment)
        .await
        .map_err(control_problem)?;
    Ok(Json(view))
}

fn work_search(q: WorkQuery) -> Result<WorkSearch, Problem> {
    for id in [&q.contact_id, &q.account_id].into_iter().flatten() {
        if !is_record_id(id) {
            return Err(Problem::bad_request(
                "invalid_search",
                format!("`{id}` is not a Salesforce id (15 or 18 letters and digits)"),
            ));
        }
    }
    if q.q.as_ref().is_some_and(|t| t.chars().count() > 200) {
        return Err(Problem::bad_request(
            "invalid_search",
            "search for at most 200 characters",
        ));
    }
    Ok(WorkSearch {
        text: q.q,
        contact_id: q.contact_id,
        account_id: q.account_id,
        limit: q.limit.unwrap_or(20),
    })
}

/// Cases the agent may see (F10): by words of the subject or number, or
/// the newest of a Contact or Account.
#[utoipa::path(get, path = "/v1/salesforce/cases", tag = "salesforce", security(("session" = [])), params(WorkQuery),
    responses((status = 200, body = WorkItems), (status = 400, body = Problem, content_type = "application/problem+json"),
              (status = 409, description = "not connected with Salesforce", body = Problem, content_type = "application/problem+json")))]
pub async fn cases(
    State(api): State<AgentApi>,
    Extension(me): Extension<Principal>,
    Query(q): Query<WorkQuery>,
) -> Result<Json<WorkItems>, Problem> {
    let search = work_search(q)?;
    let mut grant = api.grant(&me).await?;
    let records = api
        .salesforce
        .cases(&mut grant, &search)
        .await
        .map_err(search_problem)?;
    Ok(Json(WorkItems { records }))
}

/// Opportunities the agent may see (F11): by words of the name, or the
/// newest of an Account.
#[utoipa::path(get, path = "/v1/salesforce/opportunities", tag = "salesforce", security(("session" = [])), params(WorkQuery),
    responses((status = 200, body = WorkItems), (status = 400, body = Problem, content_type = "application/problem+json"),
              (status = 409, description = "not connected with Salesforce", body = Problem, content_type = "application/problem+json")))]
pub async fn opportunities(
    State(api): State<AgentApi>,
    Extension(me): Extension<Principal>,
    Query(q): Query<WorkQuery>,
) -> Result<Json<WorkItems>, Problem> {
    let search = work_search(q)?;
    if search.contact_id.is_some() {
        return Err(Problem::bad_request(
            "invalid_search",
            "Opportunities are searched by q or account_id",
        ));
    }
    let mut grant = api.grant(&me).await?;
    let records = api
        .salesforce
        .opportunities(&mut grant, &search)
        .await
        .map_err(search_problem)?;
    Ok(Json(WorkItems { records }))
}
