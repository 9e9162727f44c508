//! Which connections a worker holds, and for how long an HTTP connection may
//! wait.
//!
//! Two budgets, so that connections that cost an attacker nothing can never
//! take the places of real clients:
//! - authenticated WebSockets: `max_connections` for the node, counted by the
//!   session when it accepts `connection.init` (a session over it is closed
//!   with 1013);
//! - everything else (HTTP requests, WebSockets before `connection.init`):
//!   `max_pending_connections`, split over the workers and counted here. When
//!   it is full, a new connection is not refused: the oldest one that is not
//!   in the middle of a request is closed to make room ("shed"). Only when
//!   every one of them is busy with a request is the new one dropped.
//!
//! A connection leaves the second budget when it authenticates (its
//! [`Hangup`] says so) or closes. Its [`Admission`] is the ticket: dropping it
//! gives the place back.
//!
//! HTTP connections also have a clock ([`HttpClock`]): after each response
//! (or from accept) the next request's head must arrive within the HTTP
//! timeout, which bounds both a kept-alive connection's idle time and a
//! request head sent a byte at a time; a request's body must arrive within the
//! same time from its start. The transport's `Replay` reads the clock on
//! every read of an HTTP connection; a middleware of the application
//! ([`track_requests`]) starts it for each request and stops it once the
//! answer has been written.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use actix_web::body::{BodySize, BoxBody, MessageBody};
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::error::PayloadError;
use actix_web::http::header;
use actix_web::middleware::Next;
use bytes::Bytes;
use futures_core::Stream;
use nova_actors::link::Hangup;
use nova_actors::metrics::Metrics;

/// A connection's place in its worker's budget.
struct Slot {
    hangup: Arc<Hangup>,
    clock: Option<Rc<HttpClock>>,
}

impl Slot {
    /// Whether closing it costs nobody a request in progress (a WebSocket
    /// upgraded on it, not authenticated yet, is idle: its answer never
    /// ends).
    fn idle(&self) -> bool {
        self.clock.as_ref().is_none_or(|c| c.in_flight.get() == 0 || c.upgraded.get())
    }
}

/// The budget of not-yet-client connections of one worker.
pub struct Pending {
    max: usize,
    next: Cell<u64>,
    slots: RefCell<BTreeMap<u64, Slot>>,
    metrics: Arc<Metrics>,
}

impl Pending {
    /// A budget of `max` connections.
    pub fn new(max: usize, metrics: Arc<Metrics>) -> Rc<Pending> {
        Rc::new(Pending { max: max.max(1), next: Cell::new(0), slots: RefCell::default(), metrics })
    }

    /// Admits a new connection, shedding the oldest idle one if the budget
    /// is full; `None` when every held connection is busy with a request.
    pub fn admit(self: &Rc<Self>, hangup: Arc<Hangup>) -> Option<Admission> {
        let mut slots = self.slots.borrow_mut();
        if slots.len() >= self.max {
            // From the oldest: one that has authenticated meanwhile is no
            // longer pending (its ticket goes on its next read), one in the
            // middle of a request is skipped, the first idle one is shed.
            let mut authenticated = Vec::new();
            let shed = slots.iter().find_map(|(id, slot)| {
                if slot.hangup.is_authenticated() {
                    authenticated.push(*id);
                    None
                } else {
                    slot.idle().then_some(*id)
                }
            });
            for id in authenticated {
                slots.remove(&id);
            }
            if slots.len() >= self.max {
                let slot = slots.remove(&shed?)?;
                slot.hangup.trigger();
                self.metrics.shed_connections.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                log::debug!("shed the oldest idle pending connection to admit a new one");
            }
        }
        let id = self.next.get();
        self.next.set(id + 1);
        slots.insert(id, Slot { hangup, clock: None });
        Some(Admission { pending: self.clone(), id })
    }

    /// Connections held now.
    pub fn len(&self) -> usize {
        self.slots.borrow().len()
    }

    /// Whether none is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A connection's place in [`Pending`]; given back when dropped.
pub struct Admission {
    pending: Rc<Pending>,
    id: u64,
}

impl Admission {
    /// The connection is HTTP: it is busy while `clock` says a request is
    /// being answered, and is not shed then.
    pub fn track(&self, clock: Rc<HttpClock>) {
        if let Some(slot) = self.pending.slots.borrow_mut().get_mut(&self.id) {
            slot.clock = Some(clock);
        }
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        self.pending.slots.borrow_mut().remove(&self.id);
    }
}

/// An HTTP connection's request clock.
#[derive(Debug)]
pub struct HttpClock {
    timeout: Duration,
    /// Requests being answered.
    in_flight: Cell<u32>,
    /// While idle: when the next request's head must have arrived. While a
    /// request's body is being read: when it must have arrived.
    deadline: Cell<Instant>,
    /// Whether the current request's body has arrived (or it has none).
    body_done: Cell<bool>,
    /// Upgraded to a WebSocket: the session's own clocks apply.
    upgraded: Cell<bool>,
}

impl HttpClock {
    /// A clock for a connection accepted now.
    pub fn new(timeout: Duration) -> Rc<HttpClock> {
        Rc::new(HttpClock {
            timeout,
            in_flight: Cell::new(0),
            deadline: Cell::new(Instant::now() + timeout),
            body_done: Cell::new(true),
            upgraded: Cell::new(false),
        })
    }

    /// When reading must have produced what the server waits for, or `None`
    /// while the server, not the client, is the one working.
    pub fn deadline(&self) -> Option<Instant> {
        if self.upgraded.get() || (self.in_flight.get() > 0 && self.body_done.get()) {
            return None;
        }
        Some(self.deadline.get())
    }

    /// The time the client has for each request.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The connection became a WebSocket.
    pub fn upgraded(&self) {
        self.upgraded.set(true);
    }

    fn request_started(&self, has_body: bool) {
        self.in_flight.set(self.in_flight.get() + 1);
        self.body_done.set(!has_body);
        self.deadline.set(Instant::now() + self.timeout);
    }

    fn request_ended(&self) {
        self.in_flight.set(self.in_flight.get().saturating_sub(1));
        self.body_done.set(true);
        self.deadline.set(Instant::now() + self.timeout);
    }
}

/// The connection's clock, as the application finds it (`conn_data`).
#[derive(Clone)]
pub struct ConnClock(pub Rc<HttpClock>);

/// Middleware: starts the connection's clock for each request's body and
/// restarts it for the next request once the response is ready.
pub async fn track_requests(
    mut req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let Some(clock) = req.conn_data::<ConnClock>().map(|c| c.0.clone()) else {
        return Ok(next.call(req).await?.map_body(|_, body| Answer { body: body.boxed(), clock: None }));
    };
    let headers = req.headers();
    let has_body = headers.contains_key(header::TRANSFER_ENCODING)
        || headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .is_some_and(|n| n > 0);
    clock.request_started(has_body);
    if has_body {
        let (http_req, payload) = req.into_parts();
        let body: Payload = Payload::Stream { payload: Box::pin(Body { inner: payload, clock: clock.clone() }) };
        req = ServiceRequest::from_parts(http_req, body);
    }
    match next.call(req).await {
        // The request ends when its answer has been written (or dropped),
        // not when the handler returns: a long answer still going out is
        // not idle, and the next request's clock starts after it.
        Ok(response) => Ok(response.map_body(|_, body| Answer { body: body.boxed(), clock: Some(clock) })),
        Err(e) => {
            clock.request_ended();
            Err(e)
        }
    }
}

/// A response body that ends its request on the clock once it is written.
struct Answer {
    body: BoxBody,
    clock: Option<Rc<HttpClock>>,
}

impl Answer {
    fn end(&mut self) {
        if let Some(clock) = self.clock.take() {
            clock.request_ended();
        }
    }
}

impl MessageBody for Answer {
    type Error = Box<dyn std::error::Error>;

    fn size(&self) -> BodySize {
        self.body.size()
    }

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, Self::Error>>> {
        let next = Pin::new(&mut self.body).poll_next(cx);
        if matches!(next, Poll::Ready(None) | Poll::Ready(Some(Err(_)))) {
            self.end();
        }
        next
    }
}

impl Drop for Answer {
    fn drop(&mut self) {
        self.end();
    }
}

/// A request body that tells the clock when it has all arrived.
struct Body {
    inner: Payload,
    clock: Rc<HttpClock>,
}

impl Stream for Body {
    type Item = Result<Bytes, PayloadError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let next = Pin::new(&mut self.inner).poll_next(cx);
        if matches!(next, Poll::Ready(None) | Poll::Ready(Some(Err(_)))) {
            self.clock.body_done.set(true);
        }
        next
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending(max: usize) -> Rc<Pending> {
        Pending::new(max, Arc::new(Metrics::default()))
    }

    #[test]
    fn sheds_the_oldest_idle_connection_when_full() {
        let p = pending(2);
        let (a, b, c) = (Arc::new(Hangup::default()), Arc::new(Hangup::default()), Arc::new(Hangup::default()));
        let busy = HttpClock::new(Duration::from_secs(5));
        busy.request_started(false);
        let _a = p.admit(a.clone()).unwrap();
        _a.track(busy.clone());
        let _b = p.admit(b.clone()).unwrap();
        _b.track(HttpClock::new(Duration::from_secs(5)));
        let _c = p.admit(c.clone()).unwrap();
        assert!(!a.is_triggered(), "a request in progress is not shed");
        assert!(b.is_triggered(), "the oldest idle one is");
        assert!(!c.is_triggered());
        assert_eq!(p.len(), 2);
    }

    #[test]
    fn refuses_only_when_everything_is_busy() {
        let p = pending(1);
        let busy = HttpClock::new(Duration::from_secs(5));
        busy.request_started(true);
        let a = p.admit(Arc::default()).unwrap();
        a.track(busy.clone());
        assert!(p.admit(Arc::default()).is_none());
        busy.request_ended();
        assert!(p.admit(Arc::default()).is_some());
    }

    #[test]
    fn authenticated_and_closed_connections_leave_the_budget() {
        let p = pending(2);
        let a = Arc::new(Hangup::default());
        let _a = p.admit(a.clone()).unwrap();
        let b = p.admit(Arc::default()).unwrap();
        drop(b);
        assert_eq!(p.len(), 1);
        a.mark_authenticated();
        let c = Arc::new(Hangup::default());
        let _c = p.admit(c.clone()).unwrap();
        let _d = p.admit(Arc::default()).unwrap();
        assert!(!a.is_triggered() && !c.is_triggered(), "room was made by forgetting the authenticated one");
    }

    #[test]
    fn a_request_ends_when_its_answer_is_written_or_dropped() {
        let clock = HttpClock::new(Duration::from_secs(5));
        clock.request_started(false);
        let mut answer = Answer { body: BoxBody::new("a long answer"), clock: Some(clock.clone()) };
        assert_eq!(clock.in_flight.get(), 1, "the handler returned; the answer is not written yet");
        let mut cx = Context::from_waker(std::task::Waker::noop());
        while let Poll::Ready(Some(_)) = Pin::new(&mut answer).poll_next(&mut cx) {}
        assert_eq!(clock.in_flight.get(), 0);
        drop(answer);
        assert_eq!(clock.in_flight.get(), 0, "ended once");
        clock.request_started(false);
        drop(Answer { body: BoxBody::new(()), clock: Some(clock.clone()) });
        assert_eq!(clock.in_flight.get(), 0, "a dropped answer ends its request too");
    }

    #[test]
    fn the_clock_runs_while_the_client_owes_bytes() {
        let clock = HttpClock::new(Duration::from_secs(5));
        assert!(clock.deadline().is_some(), "waiting for the first head");
        clock.request_started(false);
        assert!(clock.deadline().is_none(), "the server is answering");
        clock.request_ended();
        assert!(clock.deadline().is_some(), "idle: waiting for the next head");
        clock.request_started(true);
        assert!(clock.deadline().is_some(), "waiting for the body");
        clock.body_done.set(true);
        assert!(clock.deadline().is_none());
        clock.upgraded();
        clock.request_ended();
        assert!(clock.deadline().is_none(), "a WebSocket has its own clocks");
    }
}
