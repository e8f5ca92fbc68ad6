//! Destinations and send options.

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use partisan_core::id::{ChannelName, NodeName, Pid, Ref, RegisteredName, RemoteRef};

use crate::error::SendError;

/// Options of one send.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SendOptions {
    /// Channel to send on; `None` is the `default` channel.
    pub channel: Option<ChannelName>,
    /// Pins the message to lane `key % parallelism` of the channel, so messages with the same
    /// key from one sender arrive in the order they were sent. Without a key, messages are
    /// spread over the lanes that are up, and their relative order is not kept.
    pub partition_key: Option<u64>,
}

impl SendOptions {
    /// Options sending on `channel`.
    pub fn on(channel: &ChannelName) -> Self {
        SendOptions {
            channel: Some(channel.clone()),
            partition_key: None,
        }
    }

    /// These options with a partition key.
    pub fn with_key(mut self, key: u64) -> Self {
        self.partition_key = Some(key);
        self
    }

    /// These options on another channel.
    pub fn with_channel(mut self, channel: &ChannelName) -> Self {
        self.channel = Some(channel.clone());
        self
    }
}

/// A borrowed destination.
#[derive(Debug, Clone, Copy)]
pub enum Dest<'a> {
    /// A process.
    Pid(&'a Pid),
    /// An alias reference.
    Ref(&'a Ref),
    /// A registered name.
    Name(&'a RegisteredName),
}

impl Dest<'_> {
    /// The node the destination lives on.
    pub fn node(&self) -> &NodeName {
        match self {
            Dest::Pid(p) => &p.node,
            Dest::Ref(r) => &r.node,
            Dest::Name(n) => &n.node,
        }
    }

    /// An owned copy.
    pub fn to_remote_ref(&self) -> RemoteRef {
        match self {
            Dest::Pid(p) => RemoteRef::Pid((*p).clone()),
            Dest::Ref(r) => RemoteRef::Ref((*r).clone()),
            Dest::Name(n) => RemoteRef::Name((*n).clone()),
        }
    }
}

/// Anything a message can be sent to: [`Pid`], [`Ref`], [`RegisteredName`], [`RemoteRef`], or a
/// reference to one of them.
pub trait Destination {
    /// The destination, borrowed.
    fn dest(&self) -> Dest<'_>;
}

impl Destination for Pid {
    fn dest(&self) -> Dest<'_> {
        Dest::Pid(self)
    }
}

impl Destination for Ref {
    fn dest(&self) -> Dest<'_> {
        Dest::Ref(self)
    }
}

impl Destination for RegisteredName {
    fn dest(&self) -> Dest<'_> {
        Dest::Name(self)
    }
}

impl Destination for RemoteRef {
    fn dest(&self) -> Dest<'_> {
        match self {
            RemoteRef::Pid(p) => Dest::Pid(p),
            RemoteRef::Ref(r) => Dest::Ref(r),
            RemoteRef::Name(n) => Dest::Name(n),
        }
    }
}

impl<T: Destination + ?Sized> Destination for &T {
    fn dest(&self) -> Dest<'_> {
        (**self).dest()
    }
}

/// Polls a future that cannot wait (a non-waiting send) to completion.
pub(crate) fn now_or_never<F: Future<Output = Result<(), SendError>>>(
    f: F,
) -> Result<(), SendError> {
    let mut f = pin!(f);
    match f.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(r) => r,
        // Unreachable by construction (the non-waiting path never awaits); fail safe anyway.
        Poll::Pending => Err(SendError::Closed),
    }
}
