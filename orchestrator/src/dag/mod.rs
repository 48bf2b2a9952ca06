//! The pipeline as a graph, and the pure rules of data flow: which node waits for which, how a
//! batch fans out, what value a reference resolves to.
//!
//! Pure: no IO, no clock, no task state. The engine asks these functions; it never re-implements
//! them.

mod batch;
mod graph;
mod path;

pub use batch::{combine, BatchPlan};
pub use graph::{is_batch_leaf, FlowInputCheck, Graph, GraphNode, NodeId, Parent, Relation};
pub use path::{lookup, value_at};

/// A graph that cannot run. All graph errors are validation errors (HTTP 400 at the API).
pub type Error = crate::spec::Error;
