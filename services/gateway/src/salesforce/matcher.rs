//! Caller matching at ring time (F14): every user who starts seeing a call
//! with a customer number gets a lookup in Salesforce with its own tokens,
//! and the answer on its event stream as `call.matched`, usually before
//! the agent picks up. A user who has not connected with Salesforce gets
//! `not_connected`, so the softphone can say why nobody is shown.

use std::sync::Arc;

use tokio::sync::{mpsc, Semaphore};
use tokio_util::sync::CancellationToken;
use tracing::{debug, Instrument};

use super::client::SalesforceError;
use super::context::{CallerMatches, MatchStatus, SalesforceContext};
use crate::calls::live::{LiveCalls, LookupRequest};

/// Lookups in flight at once; more wait their turn.
const CONCURRENT_LOOKUPS: usize = 64;

/// Serves the lookups `live` asks for until `shutdown`.
pub async fn run(live: LiveCalls, context: SalesforceContext, shutdown: CancellationToken) {
    let (tx, mut requests) = mpsc::unbounded_channel();
    live.request_lookups(tx);
    let permits = Arc::new(Semaphore::new(CONCURRENT_LOOKUPS));
    loop {
        let request: LookupRequest = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = requests.recv() => match r { Some(r) => r, None => return },
        };
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return;
        };
        let (live, context) = (live.clone(), context.clone());
        let span = tracing::info_span!("caller_match", call_id = %request.call_id, user_id = %request.user_id);
        tokio::spawn(
            async move {
                let matches = lookup(&context, &request).await;
                debug!(status = ?matches.status, found = matches.matches.len(), "caller matched");
                live.set_matches(&request.call_id, &request.user_id, matches);
                drop(permit);
            }
            .instrument(span),
        );
    }
}

async fn lookup(context: &SalesforceContext, request: &LookupRequest) -> CallerMatches {
    match context.api().for_user(&request.user_id).await {
        Ok(grant) => context.match_caller(&grant, &request.number).await,
        Err(e) => {
            let status = match e {
                SalesforceError::NotConnected => MatchStatus::NotConnected,
                _ => MatchStatus::Unavailable,
            };
            CallerMatches {
                number: request.number.clone(),
                status,
                matches: Vec::new(),
            }
        }
    }
}
