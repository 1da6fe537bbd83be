//! The workload: operator updates submitted during the run.
//!
//! Every `workload.interval` ms until the scenario's duration is over, a
//! random honest node that is up authors an update (a revocation with
//! probability `revoke_fraction`, else a grant, of a random subject) and
//! submits it to its replica as an operator would; the update is recorded
//! with the time, so its reach can be measured.
//!
//! Rules: an update the replica refuses is an error of the fixture, not a
//! result; a submit draws no random number for the replica.

use rand::Rng;
use weft_protocol::replica::{Accepted, Command, Input, Output};

use super::Sim;
use super::queue::Ev;
use crate::SimError;
use crate::payload::{Action, Payload};

impl<P: Payload> Sim<'_, P> {
    /// Submits one update and queues the next.
    pub(super) fn workload(&mut self) -> Result<(), SimError> {
        if self.faults_over {
            return Ok(());
        }
        self.push(self.now + self.sc.workload.interval, Ev::Update);
        let Some(n) = self.random_honest_live() else {
            return Ok(());
        };
        let action = if self.rng.random::<f64>() < self.sc.workload.revoke_fraction {
            Action::Revoke
        } else {
            Action::Grant
        };
        let k = self.rng.random_range(0..self.sc.workload.subjects);
        let now = self.clock(n);
        let state = self.nodes[n as usize]
            .replica
            .as_ref()
            .expect("live")
            .state();
        let bytes = self.payload.author(state, action, k)?;
        let r = self.nodes[n as usize].replica.as_mut().expect("live");
        // A submit draws no random number: 0 keeps the run's RNG stream.
        let mut outs = r.handle(now, 0, Input::Command(Command::Submit(bytes.into())));
        let answer = match outs.pop() {
            Some(Output::Submitted(answer)) => answer,
            other => unreachable!("a command's effects end with its answer, not {other:?}"),
        };
        let accepted = answer
            .map_err(|e| SimError::Fixture(format!("an operator update was refused: {e}")))?;
        let clean = self.net.partition.is_none()
            && (0..self.nodes.len() as u32)
                .all(|m| self.nodes[m as usize].byzantine || self.alive(m));
        if let Accepted::Applied(hash) = accepted {
            self.stats
                .submitted(hash, self.now, n, self.nodes.len(), clean);
        }
        self.carry_out(n, outs);
        Ok(())
    }
}
