//! Commands and reads of the engine's domains (settlement, participants, account holders), as
//! the single writer runs them: one type per command, whose answer type follows from it. The
//! writer holds every call the same way (`ledger.rs`, `Job`), so a new domain adds call types
//! here and nothing to the writer, and no caller ever matches on an answer it did not ask for.

use super::{Engine, Output, Prefetched, Wanted};

/// A command or read run by the writer on the engine.
pub trait Call: Send + std::fmt::Debug + 'static {
    /// What it answers: the domain's result (an answer or the domain's refusal).
    type Answer: Send + 'static;

    /// What it needs looked up before it runs (beyond the engine's memory); most need nothing.
    fn wanted(&self, _engine: &Engine, _wanted: &mut Wanted) {}

    /// Runs it; the ops it makes go to `out` like any other write's.
    fn run(self, engine: &mut Engine, prefetched: &Prefetched, now_ns: u64, out: &mut Output)
    -> Self::Answer;
}

impl Engine {
    /// What `call` needs looked up before it runs.
    pub fn call_wanted<C: Call>(&self, call: &C, wanted: &mut Wanted) {
        call.wanted(self, wanted);
    }

    /// Runs one call; its ops go to `out`.
    pub fn call<C: Call>(
        &mut self,
        prefetched: &Prefetched,
        call: C,
        now_ns: u64,
        out: &mut Output,
    ) -> C::Answer {
        call.run(self, prefetched, now_ns, out)
    }
}
