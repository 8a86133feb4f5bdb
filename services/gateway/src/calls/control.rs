//! Commands to live calls from outside the SIP side (the call-control API,
//! tests): a cheap clone handle that talks to the call manager.

use tokio::sync::{mpsc, oneshot};

pub use super::b2bua::Leg;

/// Why a command was not carried out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ControlError {
    #[error("no live call {0}")]
    NoSuchCall(String),
    #[error("call {0} is not answered yet; hold applies to answered calls")]
    NotAnswered(String),
    #[error("the gateway is shutting down")]
    Stopped,
}

/// A request to the call manager.
#[derive(Debug)]
pub(crate) enum Command {
    Hold { call_id: String, leg: Leg, on: bool, reply: oneshot::Sender<Result<(), ControlError>> },
}

/// Handle to control live calls by their Switchboard call id.
#[derive(Debug, Clone)]
pub struct CallControl {
    tx: mpsc::UnboundedSender<Command>,
}

impl CallControl {
    pub(crate) fn new() -> (CallControl, mpsc::UnboundedReceiver<Command>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (CallControl { tx }, rx)
    }

    /// Puts one leg of an answered call on hold (`on`) or resumes it, with a
    /// re-INVITE on that leg only.
    pub async fn hold(&self, call_id: &str, leg: Leg, on: bool) -> Result<(), ControlError> {
        let (reply, answer) = oneshot::channel();
        self.tx.send(Command::Hold { call_id: call_id.to_owned(), leg, on, reply }).map_err(|_| ControlError::Stopped)?;
        answer.await.map_err(|_| ControlError::Stopped)?
    }
}
