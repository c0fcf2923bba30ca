//! The writer's queue: one lane per submitting participant, served by deficit round robin, so
//! that no participant can starve the others' writes.
//!
//! A single FIFO in front of the writer lets one participant that keeps several maximal
//! batches in flight put every other participant's one-transfer request behind all of them.
//! Here every participant (the submitter's scope, see [`crate::Actor::scope`]) has its own lane:
//!
//! - **Admission** is bounded twice, in events (a batch of n transfers is n events): at most
//!   [`LANE_EVENTS_MAX`] events queued or being committed per lane, and [`QUEUE_EVENTS_MAX`] in
//!   all. A sender over its lane's bound waits (backpressure) without taking room from the
//!   others; the global bound caps memory.
//! - **Service** is deficit round robin: each turn a lane earns [`QUANTUM_EVENTS`] events of
//!   credit and sends commands while its credit covers them. A group commit takes turns until
//!   it holds [`crate::ledger::GROUP_EVENTS_MAX`] events or the lanes are empty, so a waiting
//!   one-transfer request joins the next group whatever other lanes hold.

use crate::hashing::HashMap;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

pub use crate::limits::LANE_EVENTS_MAX;
pub use crate::limits::LANES_MAX;
pub use crate::limits::QUANTUM_EVENTS;
pub use crate::limits::QUEUE_EVENTS_MAX;

/// An item with the room it holds in the queue; the room is given back when it is dropped
/// (after the writer answered it).
pub struct Admitted<T> {
    pub item: T,
    events: usize,
    _lane: OwnedSemaphorePermit,
    _global: OwnedSemaphorePermit,
}

impl<T> Admitted<T> {
    /// Splits the item from its room (kept alive by the returned guard).
    pub fn into_parts(self) -> (T, Room) {
        (self.item, Room { _lane: self._lane, _global: self._global })
    }
}

/// Room held in the queue until dropped.
pub struct Room {
    _lane: OwnedSemaphorePermit,
    _global: OwnedSemaphorePermit,
}

struct Lane<T> {
    items: VecDeque<Admitted<T>>,
    deficit: usize,
}

struct State<T> {
    lanes: HashMap<String, Lane<T>>,
    /// Lanes with items, in service order.
    active: VecDeque<String>,
    semaphores: HashMap<String, Arc<Semaphore>>,
}

pub struct FairQueue<T> {
    state: Mutex<State<T>>,
    global: Arc<Semaphore>,
    ready: Notify,
}

impl<T> Default for FairQueue<T> {
    fn default() -> Self {
        FairQueue {
            state: Mutex::new(State {
                lanes: HashMap::default(),
                active: VecDeque::new(),
                semaphores: HashMap::default(),
            }),
            global: Arc::new(Semaphore::new(QUEUE_EVENTS_MAX)),
            ready: Notify::new(),
        }
    }
}

impl<T> FairQueue<T> {
    fn lock(&self) -> std::sync::MutexGuard<'_, State<T>> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn lane_semaphore(&self, lane: &str) -> Arc<Semaphore> {
        let mut state = self.lock();
        if let Some(semaphore) = state.semaphores.get(lane) {
            return semaphore.clone();
        }
        if state.semaphores.len() >= LANES_MAX {
            state.semaphores.retain(|_, s| s.available_permits() < LANE_EVENTS_MAX);
        }
        let semaphore = Arc::new(Semaphore::new(LANE_EVENTS_MAX));
        state.semaphores.insert(lane.to_owned(), semaphore.clone());
        semaphore
    }

    /// Waits for room for `events` (at most [`LANE_EVENTS_MAX`]) in `lane` and in the queue,
    /// then queues `item`. `Err(item)` when the queue is closed.
    pub async fn push(&self, lane: &str, events: usize, item: T) -> Result<(), T> {
        let events = events.clamp(1, LANE_EVENTS_MAX);
        let permits = events as u32;
        let lane_room = self.lane_semaphore(lane).acquire_many_owned(permits).await;
        let Ok(lane_room) = lane_room else { return Err(item) };
        let Ok(global_room) = self.global.clone().acquire_many_owned(permits).await else { return Err(item) };
        {
            let mut state = self.lock();
            let admitted = Admitted { item, events, _lane: lane_room, _global: global_room };
            let entry = state
                .lanes
                .entry(lane.to_owned())
                .or_insert_with(|| Lane { items: VecDeque::new(), deficit: 0 });
            let was_idle = entry.items.is_empty();
            entry.items.push_back(admitted);
            if was_idle {
                state.active.push_back(lane.to_owned());
            }
        }
        self.ready.notify_one();
        Ok(())
    }

    /// Takes up to `budget` events of items, fairly across lanes (deficit round robin). Always
    /// takes at least one item when any is queued.
    pub fn take(&self, budget: usize, into: &mut Vec<Admitted<T>>) -> usize {
        let mut state = self.lock();
        let mut taken = 0;
        // Rounds over the lanes with items; a round in which no lane could send ends the group.
        loop {
            let round = state.active.len();
            let mut progressed = false;
            for _ in 0..round {
                if taken >= budget {
                    break;
                }
                let Some(name) = state.active.pop_front() else { break };
                let Some(lane) = state.lanes.get_mut(&name) else { continue };
                lane.deficit = lane.deficit.saturating_add(QUANTUM_EVENTS).min(LANE_EVENTS_MAX);
                while let Some(front) = lane.items.front() {
                    let fits_budget = taken == 0 || taken + front.events <= budget;
                    if front.events > lane.deficit || !fits_budget {
                        break;
                    }
                    let Some(admitted) = lane.items.pop_front() else { break };
                    lane.deficit -= admitted.events;
                    taken += admitted.events;
                    progressed = true;
                    into.push(admitted);
                }
                if lane.items.is_empty() {
                    // An idle lane keeps no credit (DRR): it cannot save up for a burst.
                    state.lanes.remove(&name);
                } else {
                    state.active.push_back(name);
                }
            }
            if !progressed || taken >= budget || state.active.is_empty() {
                return taken;
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.lock().active.is_empty()
    }

    /// Resolves when an item may be waiting.
    pub async fn ready(&self) {
        self.ready.notified().await
    }

    /// Wakes the consumer (e.g. to notice the producers are gone).
    pub fn wake(&self) {
        self.ready.notify_one();
    }

    /// Closes admission: waiting and later pushes fail.
    pub fn close(&self) {
        self.global.close();
        for semaphore in self.lock().semaphores.values() {
            semaphore.close();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(queue: &FairQueue<(char, usize)>, budget: usize) -> Vec<(char, usize)> {
        let mut out = Vec::new();
        queue.take(budget, &mut out);
        out.into_iter().map(|a| a.item).collect()
    }

    #[tokio::test]
    async fn a_small_request_is_served_in_the_next_group_whatever_another_lane_holds() {
        let queue = FairQueue::default();
        for i in 0..4 {
            queue.push("heavy", 8_000, ('h', i)).await.unwrap();
        }
        queue.push("light", 1, ('l', 0)).await.unwrap();
        // A group of at most 9,000 events: one heavy batch, then the light request.
        let group = drain(&queue, 9_000);
        assert_eq!(group, vec![('h', 0), ('l', 0)]);
        assert_eq!(drain(&queue, 9_000), vec![('h', 1)]);
    }

    #[tokio::test]
    async fn lanes_alternate_by_events_not_by_requests() {
        let queue = FairQueue::default();
        for i in 0..3 {
            queue.push("a", 8_000, ('a', i)).await.unwrap();
        }
        for i in 0..20 {
            queue.push("b", 1_000, ('b', i)).await.unwrap();
        }
        let group = drain(&queue, 32_000);
        let a: usize = group.iter().filter(|(l, _)| *l == 'a').count() * 8_000;
        let b: usize = group.iter().filter(|(l, _)| *l == 'b').count() * 1_000;
        assert!(a.abs_diff(b) <= QUANTUM_EVENTS, "a {a} b {b}: {group:?}");
    }

    #[tokio::test]
    async fn a_full_lane_waits_without_blocking_the_others() {
        let queue = Arc::new(FairQueue::default());
        let mut n = 0;
        while n + crate::types::BATCH_EVENTS_MAX <= LANE_EVENTS_MAX {
            queue.push("heavy", crate::types::BATCH_EVENTS_MAX, ('h', n)).await.unwrap();
            n += crate::types::BATCH_EVENTS_MAX;
        }
        // The heavy lane is full: its next push waits...
        let blocked = {
            let queue = queue.clone();
            tokio::spawn(async move { queue.push("heavy", crate::types::BATCH_EVENTS_MAX, ('h', 999)).await })
        };
        tokio::task::yield_now().await;
        assert!(!blocked.is_finished());
        // ...while another lane is admitted at once.
        tokio::time::timeout(std::time::Duration::from_secs(1), queue.push("light", 1, ('l', 0)))
            .await
            .expect("another participant is not blocked")
            .unwrap();
        // Serving (and dropping) the heavy items gives the room back.
        let mut out = Vec::new();
        queue.take(usize::MAX, &mut out);
        drop(out);
        tokio::time::timeout(std::time::Duration::from_secs(1), blocked).await.unwrap().unwrap().unwrap();
    }
}
