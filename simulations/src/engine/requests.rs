//! Sync requests in flight, and their timeouts.
//!
//! A replica's `Send` opens a request with the next id and a deadline one
//! `request_timeout` away; the answer (`Respond`) goes back to whoever asked.
//! A request not answered by its deadline fails: the asking node gets
//! `RequestFailed`, unless it has crashed since.
//!
//! Rules: ids are handed out one after another and every request has the
//! same timeout, so the oldest request has the earliest deadline. Timeouts
//! are swept in that order by one timer (at most one `Ev::RequestTimeout`
//! is queued), not one event each.

use std::collections::VecDeque;

use weft_protocol::replica::Input;
use weft_protocol::wire::{SyncRequest, SyncResponse};

use super::Sim;
use super::msg::Msg;
use super::queue::Ev;
use crate::payload::Payload;

/// A sync request in flight.
pub(super) struct Req {
    /// The node that asked.
    pub(super) from: u32,
    /// The node asked.
    pub(super) to: u32,
    /// The asking node's incarnation when it asked.
    pub(super) inc_from: u32,
    /// When it times out, virtual ms.
    pub(super) deadline: u64,
}

/// Sync requests in flight, by id. A deque that starts at the oldest live id
/// serves lookups by index and the timeout sweep from its front, in the
/// order of a map by id.
#[derive(Default)]
pub(super) struct Requests {
    /// The id of `slots[0]`.
    base: u64,
    /// `None` once answered; the front is always live.
    slots: VecDeque<Option<Req>>,
    /// The id of the last request opened (the first is 1).
    last: u64,
    /// An `Ev::RequestTimeout` is queued.
    sweep_scheduled: bool,
}

impl Requests {
    /// Opens request `r`; its id.
    fn open(&mut self, r: Req) -> u64 {
        self.last += 1;
        let req = self.last;
        if self.slots.is_empty() {
            self.base = req;
        }
        debug_assert_eq!(req, self.base + self.slots.len() as u64, "ids in order");
        self.slots.push_back(Some(r));
        req
    }

    fn get(&self, req: u64) -> Option<&Req> {
        let i = req.checked_sub(self.base)?;
        self.slots.get(i as usize)?.as_ref()
    }

    /// Closes request `req`; `None` if it was not open.
    pub(super) fn remove(&mut self, req: u64) -> Option<Req> {
        let i = req.checked_sub(self.base)?;
        let r = self.slots.get_mut(i as usize)?.take();
        while self.slots.front().is_some_and(Option::is_none) {
            self.slots.pop_front();
            self.base += 1;
        }
        r
    }

    /// The oldest live request.
    fn first(&self) -> Option<(u64, &Req)> {
        self.slots.front()?.as_ref().map(|r| (self.base, r))
    }
}

impl<P: Payload> Sim<'_, P> {
    /// Node `n` sends sync request `request` to `to`.
    pub(super) fn request(&mut self, n: u32, to: u32, request: SyncRequest) {
        let inc_from = self.hot[n as usize].inc;
        let deadline = self.now + self.sc.replica.request_timeout;
        let req = self.requests.open(Req {
            from: n,
            to,
            inc_from,
            deadline,
        });
        if !self.requests.sweep_scheduled {
            self.requests.sweep_scheduled = true;
            self.push(deadline, Ev::RequestTimeout { req });
        }
        let request = Box::new(request);
        self.send(n, to, Msg::Request { req, request });
    }

    /// Node `n` answers request `req` with `response`, if it is still open.
    pub(super) fn respond(&mut self, n: u32, req: u64, response: SyncResponse) {
        if let Some(r) = self.requests.get(req) {
            let to = r.from;
            self.send(
                n,
                to,
                Msg::Response {
                    req,
                    response: Box::new(response),
                },
            );
        }
    }

    /// Fails every request past its deadline, oldest first, and queues the
    /// next sweep at the next deadline.
    pub(super) fn sweep_requests(&mut self) {
        self.requests.sweep_scheduled = false;
        while let Some((req, first)) = self.requests.first() {
            if first.deadline > self.now {
                let deadline = first.deadline;
                self.requests.sweep_scheduled = true;
                self.push(deadline, Ev::RequestTimeout { req });
                break;
            }
            let r = self.requests.remove(req).expect("the first is live");
            if self.current(r.from, r.inc_from) {
                self.input(r.from, Input::RequestFailed { peer: r.to });
            }
        }
    }
}
