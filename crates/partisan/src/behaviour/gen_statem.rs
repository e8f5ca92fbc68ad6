//! GenStatem: a state machine in a process, after Erlang/OTP's `gen_statem` (in its
//! `handle_event_function` mode). States are a user type (typically an enum);
//! [`GenStatem::handle_event`] gets the state and an [`Event`] and returns a [`Transition`]:
//! the next state and [`Action`]s. Calls and casts are those of [`gen_server`] and work across
//! nodes the same way.
//!
//! Rules, as in `gen_statem`:
//!
//! - A **state change** is a transition to a state not equal (`!=`) to the current one.
//!   [`Transition::to`] the same state is not a change.
//! - **Postpone** ([`Action::Postpone`]): the event is kept and retried after the next state
//!   change, before any other queued event; postponed events keep their order.
//! - **Next events** ([`Action::NextEvent`]): handled right after this transition, before
//!   postponed events being retried and before anything else queued, in the order given.
//! - **State timeout** ([`Action::StateTimeout`]): one per machine; a state change cancels it
//!   (set it in the transition, or in the enter call, to arm one for the new state); setting it
//!   again replaces it.
//! - **Event timeout** ([`Action::EventTimeout`]): cancelled by any event, including one
//!   already waiting when it comes due.
//! - **Named (generic) timeouts** ([`Action::Timeout`]): one per name; setting a name again
//!   replaces it; only [`Action::CancelTimeout`] cancels it.
//! - **State enter calls**: [`GenStatem::enter`] runs after every state change and for the
//!   initial state (with the old state equal to it). It may stay in the state (or stop),
//!   reply, and set or cancel timeouts; changing the state, postponing or inserting events
//!   there stops the machine with an error. Its default does nothing.
//!
//! Timeouts are tokio timers of the machine's own task (so tokio's paused clock drives them in
//! tests); a timeout that comes due is an event like any other, delivered when the machine is
//! done with its queued (next and retried) events.
//!
//! [`gen_server`]: crate::gen_server

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::time::Duration;

use partisan_core::id::Pid;
use partisan_core::signals::ExitReason;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::time::Instant;

use super::call::{receive, reply_quietly, Incoming};
use super::{catch, Launch};
use crate::node::Node;
use crate::process::registry::Envelope;
use crate::process::Process;

pub use super::call::{call, cast, stop, CallError, Endpoint, ReplyTo};
pub use super::ServerStartError;

/// A state machine's types and callbacks. The implementing value is the machine's data; its
/// state is a separate value of [`GenStatem::State`].
///
/// Implement the callbacks with `async fn` in the `impl` block; their futures must be `Send`.
pub trait GenStatem: Send + Sized + 'static {
    /// The states.
    type State: Clone + PartialEq + fmt::Debug + Send + Sync + 'static;
    /// The requests of calls.
    type Call: DeserializeOwned + Send + Sync + 'static;
    /// The replies to calls.
    type Reply: Serialize + Send + Sync + 'static;
    /// The messages of casts.
    type Cast: DeserializeOwned + Send + Sync + 'static;
    /// What internal events ([`Action::NextEvent`] with [`Event::Internal`]) and timeouts
    /// carry (`()` if nothing).
    type Internal: Send + Sync + 'static;

    /// Runs first: the initial state and actions (timeouts, next events, replies). An error
    /// ends the machine with that reason ([`start`] then returns it).
    fn init(
        &mut self,
        me: &mut Process,
    ) -> impl Future<Output = Result<(Self::State, Vec<Action<Self>>), ExitReason>> + Send;

    /// Handles one event in `state`.
    fn handle_event(
        &mut self,
        state: &Self::State,
        event: &Event<Self>,
        me: &mut Process,
    ) -> impl Future<Output = Transition<Self>> + Send;

    /// The state enter call: runs after every state change (from `old` to `state`) and once
    /// for the initial state (`old == state`). See the module documentation for what it may
    /// return. By default, does nothing.
    fn enter(
        &mut self,
        old: &Self::State,
        state: &Self::State,
        me: &mut Process,
    ) -> impl Future<Output = Transition<Self>> + Send {
        let _ = (old, state, me);
        async { Transition::keep() }
    }

    /// Runs once when the machine stops on its own account (a transition's stop, a panic in a
    /// callback, [`stop`], its parent's trapped exit signal, node shutdown); not when it is
    /// killed by an exit signal it does not trap. By default, does nothing.
    fn terminate(
        &mut self,
        reason: &ExitReason,
        state: &Self::State,
        me: &mut Process,
    ) -> impl Future<Output = ()> + Send {
        let _ = (reason, state, me);
        async {}
    }
}

/// An event handed to [`GenStatem::handle_event`].
pub enum Event<M: GenStatem> {
    /// A call; reply with [`Transition::reply`] (now, or later from anywhere with
    /// [`ReplyTo::reply`]).
    Call {
        /// The request.
        request: M::Call,
        /// Where the reply goes.
        from: ReplyTo<M::Reply>,
    },
    /// A cast.
    Cast(M::Cast),
    /// Any other message or signal (monitor `Down`s, trapped exits, plain messages).
    Info(Envelope),
    /// An event the machine inserted itself ([`Action::NextEvent`]).
    Internal(M::Internal),
    /// The state timeout came due.
    StateTimeout(M::Internal),
    /// The event timeout came due (no event arrived before it).
    EventTimeout(M::Internal),
    /// The named timeout came due.
    Timeout {
        /// Its name.
        name: String,
        /// What it carries.
        content: M::Internal,
    },
}

impl<M: GenStatem> fmt::Debug for Event<M>
where
    M::Call: fmt::Debug,
    M::Cast: fmt::Debug,
    M::Internal: fmt::Debug,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Event::Call { request, from } => f
                .debug_struct("Call")
                .field("request", request)
                .field("from", from)
                .finish(),
            Event::Cast(m) => f.debug_tuple("Cast").field(m).finish(),
            Event::Info(e) => f.debug_tuple("Info").field(e).finish(),
            Event::Internal(i) => f.debug_tuple("Internal").field(i).finish(),
            Event::StateTimeout(i) => f.debug_tuple("StateTimeout").field(i).finish(),
            Event::EventTimeout(i) => f.debug_tuple("EventTimeout").field(i).finish(),
            Event::Timeout { name, content } => f
                .debug_struct("Timeout")
                .field("name", name)
                .field("content", content)
                .finish(),
        }
    }
}

/// One action of a [`Transition`], carried out in order after the callback returns.
pub enum Action<M: GenStatem> {
    /// Sends a call's reply (at once, before the machine goes on).
    Reply(ReplyTo<M::Reply>, M::Reply),
    /// Keeps the current event to retry it after the next state change.
    Postpone,
    /// Inserts an event to handle next, before anything queued.
    NextEvent(Event<M>),
    /// Arms the state timeout (replacing any): [`Event::StateTimeout`] after the delay unless
    /// the state changes first.
    StateTimeout(Duration, M::Internal),
    /// Cancels the state timeout.
    CancelStateTimeout,
    /// Arms the event timeout (replacing any): [`Event::EventTimeout`] after the delay unless
    /// an event comes first.
    EventTimeout(Duration, M::Internal),
    /// Arms the named timeout (replacing any of that name): [`Event::Timeout`] after the
    /// delay unless cancelled.
    Timeout(String, Duration, M::Internal),
    /// Cancels the named timeout, if armed.
    CancelTimeout(String),
}

/// The next state.
enum Next<S> {
    Keep,
    To(S),
    Stop(ExitReason),
}

/// What a callback returns: the next state (or stop) and the actions to carry out.
pub struct Transition<M: GenStatem> {
    next: Next<M::State>,
    actions: Vec<Action<M>>,
}

impl<M: GenStatem> Transition<M> {
    /// Stays in the current state (not a state change).
    pub fn keep() -> Self {
        Transition {
            next: Next::Keep,
            actions: Vec::new(),
        }
    }

    /// Goes to `state` (a state change if it differs from the current one).
    pub fn to(state: M::State) -> Self {
        Transition {
            next: Next::To(state),
            actions: Vec::new(),
        }
    }

    /// Stops: replies among the actions are sent first, then `terminate` runs and the machine
    /// ends with `reason` (other actions are dropped).
    pub fn stop(reason: ExitReason) -> Self {
        Transition {
            next: Next::Stop(reason),
            actions: Vec::new(),
        }
    }

    /// Adds an action.
    pub fn action(mut self, action: Action<M>) -> Self {
        self.actions.push(action);
        self
    }

    /// Adds [`Action::Reply`].
    pub fn reply(self, to: &ReplyTo<M::Reply>, value: M::Reply) -> Self {
        self.action(Action::Reply(to.clone(), value))
    }

    /// Adds [`Action::Postpone`].
    pub fn postpone(self) -> Self {
        self.action(Action::Postpone)
    }

    /// Adds [`Action::NextEvent`].
    pub fn next_event(self, event: Event<M>) -> Self {
        self.action(Action::NextEvent(event))
    }

    /// Adds [`Action::StateTimeout`].
    pub fn state_timeout(self, after: Duration, content: M::Internal) -> Self {
        self.action(Action::StateTimeout(after, content))
    }

    /// Adds [`Action::CancelStateTimeout`].
    pub fn cancel_state_timeout(self) -> Self {
        self.action(Action::CancelStateTimeout)
    }

    /// Adds [`Action::EventTimeout`].
    pub fn event_timeout(self, after: Duration, content: M::Internal) -> Self {
        self.action(Action::EventTimeout(after, content))
    }

    /// Adds [`Action::Timeout`].
    pub fn timeout(self, name: impl Into<String>, after: Duration, content: M::Internal) -> Self {
        self.action(Action::Timeout(name.into(), after, content))
    }

    /// Adds [`Action::CancelTimeout`].
    pub fn cancel_timeout(self, name: impl Into<String>) -> Self {
        self.action(Action::CancelTimeout(name.into()))
    }
}

/// Starts the machine `data` in a new process on `node` and waits for its `init`: its pid,
/// or [`ServerStartError::Init`] with the reason `init` failed with (the process has ended).
pub async fn start<M: GenStatem>(node: &Node, data: M) -> Result<Pid, ServerStartError> {
    super::start(node, None, move |p, launch| run(p, data, launch)).await
}

/// [`start`], with the machine registered under `name` before `init` runs. A taken name is
/// [`ServerStartError::Name`], and nothing is started.
pub async fn start_named<M: GenStatem>(
    node: &Node,
    name: &str,
    data: M,
) -> Result<Pid, ServerStartError> {
    super::start(node, Some(name), move |p, launch| run(p, data, launch)).await
}

/// Starts the machine linked with `parent`, returning its pid at once (see
/// [`gen_server::start_link`](crate::gen_server::start_link), whose rules it follows).
pub fn start_link<M: GenStatem>(parent: &Process, data: M) -> Result<Pid, ServerStartError> {
    super::start_link(parent, None, move |p, launch| run(p, data, launch))
}

/// [`start_link`], registered under `name` before `init` runs; a taken name is
/// [`ServerStartError::Name`], and nothing is started.
pub fn start_link_named<M: GenStatem>(
    parent: &Process,
    name: &str,
    data: M,
) -> Result<Pid, ServerStartError> {
    super::start_link(parent, Some(name), move |p, launch| run(p, data, launch))
}

/// An armed timeout.
struct Armed<I> {
    at: Instant,
    /// Arming order, to fire timeouts due at the same instant in that order.
    seq: u64,
    content: I,
}

/// Which timeout.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Which {
    State,
    Event,
    Named(String),
}

/// The machine's timeouts.
struct Timers<I> {
    state: Option<Armed<I>>,
    event: Option<Armed<I>>,
    named: Vec<(String, Armed<I>)>,
    seq: u64,
}

impl<I> Timers<I> {
    fn new() -> Self {
        Timers {
            state: None,
            event: None,
            named: Vec::new(),
            seq: 0,
        }
    }

    fn arm(&mut self, after: Duration, content: I) -> Armed<I> {
        self.seq += 1;
        Armed {
            at: super::deadline(after),
            seq: self.seq,
            content,
        }
    }

    /// The timeout due first, and when.
    fn next(&self) -> Option<(Instant, Which)> {
        let mut best: Option<(Instant, u64, Which)> = None;
        let mut consider = |a: &Armed<I>, w: Which| {
            if best
                .as_ref()
                .is_none_or(|(at, seq, _)| (a.at, a.seq) < (*at, *seq))
            {
                best = Some((a.at, a.seq, w));
            }
        };
        if let Some(a) = &self.state {
            consider(a, Which::State);
        }
        if let Some(a) = &self.event {
            consider(a, Which::Event);
        }
        for (name, a) in &self.named {
            consider(a, Which::Named(name.clone()));
        }
        best.map(|(at, _, w)| (at, w))
    }

    /// Disarms `which` and returns its event.
    fn fire<M: GenStatem<Internal = I>>(&mut self, which: Which) -> Option<Event<M>> {
        match which {
            Which::State => self.state.take().map(|a| Event::StateTimeout(a.content)),
            Which::Event => self.event.take().map(|a| Event::EventTimeout(a.content)),
            Which::Named(name) => {
                let i = self.named.iter().position(|(n, _)| *n == name)?;
                let (name, a) = self.named.remove(i);
                Some(Event::Timeout {
                    name,
                    content: a.content,
                })
            }
        }
    }

    /// Carries out a timeout action; others are ignored.
    fn apply<M: GenStatem<Internal = I>>(&mut self, action: Action<M>) {
        match action {
            Action::StateTimeout(after, content) => self.state = Some(self.arm(after, content)),
            Action::CancelStateTimeout => self.state = None,
            Action::EventTimeout(after, content) => self.event = Some(self.arm(after, content)),
            Action::Timeout(name, after, content) => {
                let armed = self.arm(after, content);
                match self.named.iter_mut().find(|(n, _)| *n == name) {
                    Some((_, a)) => *a = armed,
                    None => self.named.push((name, armed)),
                }
            }
            Action::CancelTimeout(name) => self.named.retain(|(n, _)| *n != name),
            Action::Reply(..) | Action::Postpone | Action::NextEvent(_) => {}
        }
    }
}

/// What the machine's wait for its next event produced.
enum Received<M: GenStatem> {
    Event(Event<M>),
    Stop(ExitReason),
}

/// A running machine.
struct Machine<M: GenStatem> {
    me: Process,
    data: M,
    state: M::State,
    /// Events to handle before reading the mailbox: next events, then retried postponed ones.
    queue: VecDeque<Event<M>>,
    /// Postponed events, oldest first.
    postponed: VecDeque<Event<M>>,
    timers: Timers<M::Internal>,
    launch: Launch,
}

/// What a transition's actions sorted into.
struct Sorted<M: GenStatem> {
    postpone: bool,
    next_events: Vec<Event<M>>,
    timer_actions: Vec<Action<M>>,
}

/// The machine's process: `init`, the initial enter call, then one event at a time.
async fn run<M: GenStatem>(mut me: Process, mut data: M, mut launch: Launch) -> ExitReason {
    let init = match catch(data.init(&mut me)).await {
        Ok(r) => r,
        Err(panic) => Err(ExitReason::panic(panic)),
    };
    launch.init_done(init.as_ref().map(|_| ()));
    let (state, actions) = match init {
        Ok(v) => v,
        Err(reason) => return reason,
    };
    let mut m = Machine {
        me,
        data,
        state,
        queue: VecDeque::new(),
        postponed: VecDeque::new(),
        timers: Timers::new(),
        launch,
    };
    let end = match m.start(actions).await {
        Some(reason) => reason,
        None => m.serve().await,
    };
    m.finish(end).await
}

impl<M: GenStatem> Machine<M> {
    /// The initial actions and enter call; `Some(reason)` to stop.
    async fn start(&mut self, actions: Vec<Action<M>>) -> Option<ExitReason> {
        let sorted = self.sort(actions).await;
        if sorted.postpone {
            return Some(ExitReason::error("init cannot postpone"));
        }
        for a in sorted.timer_actions {
            self.timers.apply(a);
        }
        let initial = self.state.clone();
        if let Some(reason) = self.enter(initial).await {
            return Some(reason);
        }
        self.queue.extend(sorted.next_events);
        None
    }

    /// Handles events until a stop; the reason.
    async fn serve(&mut self) -> ExitReason {
        loop {
            let event = match self.queue.pop_front() {
                Some(e) => e,
                None => match self.wait().await {
                    Received::Event(e) => e,
                    Received::Stop(reason) => return reason,
                },
            };
            // Any event cancels the event timeout.
            self.timers.event = None;
            if let Some(reason) = self.handle(event).await {
                return reason;
            }
        }
    }

    /// The next event from the mailbox or a timeout (or a stop request, the parent's exit,
    /// node shutdown).
    async fn wait(&mut self) -> Received<M> {
        loop {
            let env = match self.timers.next() {
                None => self.me.recv().await,
                Some((at, which)) => {
                    tokio::select! {
                        biased;
                        _ = tokio::time::sleep_until(at) => {
                            // An event already waiting cancels the event timeout.
                            let waiting = match which {
                                Which::Event => self.me.try_recv(),
                                _ => None,
                            };
                            match waiting {
                                Some(env) => {
                                    self.timers.event = None;
                                    Some(env)
                                }
                                None => match self.timers.fire::<M>(which) {
                                    Some(e) => return Received::Event(e),
                                    None => continue,
                                },
                            }
                        }
                        env = self.me.recv() => env,
                    }
                }
            };
            let Some(env) = env else {
                return Received::Stop(ExitReason::Shutdown);
            };
            match receive::<M::Call, M::Cast, M::Reply>(&self.me, env).await {
                None => continue,
                Some(Incoming::Call(request, from)) => {
                    return Received::Event(Event::Call { request, from })
                }
                Some(Incoming::Cast(m)) => return Received::Event(Event::Cast(m)),
                Some(Incoming::Stop(reason)) => return Received::Stop(reason),
                Some(Incoming::Info(env)) => match self.launch.parent_exit(&env) {
                    Some(reason) => return Received::Stop(reason),
                    None => return Received::Event(Event::Info(env)),
                },
            }
        }
    }

    /// Sends the replies among `actions` (in order) and sorts the rest.
    async fn sort(&mut self, actions: Vec<Action<M>>) -> Sorted<M> {
        let mut sorted = Sorted {
            postpone: false,
            next_events: Vec::new(),
            timer_actions: Vec::new(),
        };
        for a in actions {
            match a {
                Action::Reply(to, value) => reply_quietly(&self.me, &to, &value).await,
                Action::Postpone => sorted.postpone = true,
                Action::NextEvent(e) => sorted.next_events.push(e),
                timer => sorted.timer_actions.push(timer),
            }
        }
        sorted
    }

    /// Handles one event; `Some(reason)` to stop.
    async fn handle(&mut self, event: Event<M>) -> Option<ExitReason> {
        let t = match catch(self.data.handle_event(&self.state, &event, &mut self.me)).await {
            Ok(t) => t,
            Err(panic) => {
                tracing::warn!(machine = %self.me.pid(), %panic, "GenStatem handle_event panicked");
                return Some(ExitReason::panic(panic));
            }
        };
        let sorted = self.sort(t.actions).await;
        let new_state = match t.next {
            Next::Stop(reason) => return Some(reason),
            Next::Keep => None,
            Next::To(s) if s == self.state => None,
            Next::To(s) => Some(s),
        };
        if sorted.postpone {
            self.postponed.push_back(event);
        }
        match new_state {
            None => {
                for a in sorted.timer_actions {
                    self.timers.apply(a);
                }
            }
            Some(s) => {
                let old = std::mem::replace(&mut self.state, s);
                self.timers.state = None;
                // Retried postponed events come before what was queued...
                while let Some(e) = self.postponed.pop_back() {
                    self.queue.push_front(e);
                }
                for a in sorted.timer_actions {
                    self.timers.apply(a);
                }
                if let Some(reason) = self.enter(old).await {
                    return Some(reason);
                }
            }
        }
        // ...and next events before both.
        for e in sorted.next_events.into_iter().rev() {
            self.queue.push_front(e);
        }
        None
    }

    /// The enter call for the current state, coming from `old`; `Some(reason)` to stop.
    async fn enter(&mut self, old: M::State) -> Option<ExitReason> {
        let t = match catch(self.data.enter(&old, &self.state, &mut self.me)).await {
            Ok(t) => t,
            Err(panic) => {
                tracing::warn!(machine = %self.me.pid(), %panic, "GenStatem enter panicked");
                return Some(ExitReason::panic(panic));
            }
        };
        let sorted = self.sort(t.actions).await;
        match t.next {
            Next::Stop(reason) => return Some(reason),
            Next::To(s) if s != self.state => {
                return Some(ExitReason::error(format!(
                    "state enter call changed the state from {:?} to {s:?}",
                    self.state
                )))
            }
            _ => {}
        }
        if sorted.postpone || !sorted.next_events.is_empty() {
            return Some(ExitReason::error(
                "a state enter call cannot postpone or insert events",
            ));
        }
        for a in sorted.timer_actions {
            self.timers.apply(a);
        }
        None
    }

    /// Runs `terminate`; the machine's exit reason (a panic in `terminate` replaces it).
    async fn finish(&mut self, reason: ExitReason) -> ExitReason {
        match catch(self.data.terminate(&reason, &self.state, &mut self.me)).await {
            Ok(()) => reason,
            Err(panic) => {
                tracing::warn!(machine = %self.me.pid(), %panic, "GenStatem terminate panicked");
                ExitReason::panic(panic)
            }
        }
    }
}
