//! The classic code lock as a GenStatem (after the OTP design principles' example): a door
//! that is `Locked` until the right code is entered button by button, then `Open` for a while
//! before a state timeout locks it again. The lock runs on node `door`; node `visitor` presses
//! the buttons (casts) and asks the state (calls).
//!
//! `cargo run --example door_statem`

use std::time::{Duration, Instant};

use partisan::gen_statem::{self, Action, Event, GenStatem, Transition};
use partisan::{ExitReason, Node, NodeBuilder, Process};
use serde::{Deserialize, Serialize};

/// How long the door stays open.
const OPEN_TIME: Duration = Duration::from_millis(300);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
enum Door {
    Locked,
    Open,
}

/// The lock's data: the code, and the buttons pressed since it last locked.
struct CodeLock {
    code: Vec<u8>,
    pressed: Vec<u8>,
}

impl GenStatem for CodeLock {
    type State = Door;
    /// The only call asks the state.
    type Call = ();
    type Reply = Door;
    /// A button press.
    type Cast = u8;
    /// Timeouts carry nothing.
    type Internal = ();

    async fn init(&mut self, _me: &mut Process) -> Result<(Door, Vec<Action<Self>>), ExitReason> {
        Ok((Door::Locked, vec![]))
    }

    async fn handle_event(
        &mut self,
        state: &Door,
        event: &Event<Self>,
        _me: &mut Process,
    ) -> Transition<Self> {
        match (state, event) {
            (_, Event::Call { from, .. }) => Transition::keep().reply(from, *state),
            (Door::Locked, Event::Cast(button)) => {
                self.pressed.push(*button);
                if self.pressed == self.code {
                    Transition::to(Door::Open)
                } else {
                    if !self.code.starts_with(&self.pressed) {
                        self.pressed.clear();
                    }
                    Transition::keep()
                }
            }
            // Buttons do nothing while open.
            (Door::Open, Event::Cast(_)) => Transition::keep(),
            (Door::Open, Event::StateTimeout(())) => Transition::to(Door::Locked),
            _ => Transition::keep(),
        }
    }

    async fn enter(&mut self, _old: &Door, state: &Door, _me: &mut Process) -> Transition<Self> {
        self.pressed.clear();
        match state {
            Door::Open => Transition::keep().state_timeout(OPEN_TIME, ()),
            Door::Locked => Transition::keep(),
        }
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let door = NodeBuilder::new("door@127.0.0.1")
        .cookie("example")
        .start()
        .await?;
    let visitor = NodeBuilder::new("visitor@127.0.0.1")
        .cookie("example")
        .start()
        .await?;
    visitor
        .join_and_wait(door.listen_addrs()[0], Duration::from_secs(10))
        .await?;

    let lock = CodeLock {
        code: vec![1, 2, 3, 4],
        pressed: Vec::new(),
    };
    gen_statem::start_named(&door, "lock", lock).await?;
    let lock = Node::name_on(door.name(), "lock")?;
    let timeout = Duration::from_secs(5);
    let state = |visitor: Node, lock| async move {
        gen_statem::call::<Door, _, _, _>(&visitor, &lock, &(), timeout).await
    };

    // A wrong code leaves it locked; the right one opens it.
    for button in [9u8, 1, 2, 9] {
        gen_statem::cast(&visitor, &lock, &button).await?;
    }
    assert_eq!(state(visitor.clone(), lock.clone()).await?, Door::Locked);
    for button in [1u8, 2, 3, 4] {
        gen_statem::cast(&visitor, &lock, &button).await?;
    }
    let opened = Instant::now();
    assert_eq!(state(visitor.clone(), lock.clone()).await?, Door::Open);

    // The state timeout locks it again.
    let relocked = loop {
        if state(visitor.clone(), lock.clone()).await? == Door::Locked {
            break opened.elapsed();
        }
        assert!(opened.elapsed() < Duration::from_secs(10), "never relocked");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(relocked >= OPEN_TIME);

    println!(
        "door_statem: {} opened the code lock on {} with 1-2-3-4 (a wrong code left it \
         locked); its state timeout locked it again after {relocked:?}",
        visitor.name(),
        door.name()
    );
    visitor.shutdown().await;
    door.shutdown().await;
    Ok(())
}
