//! The graph of a batch pipeline, built from the node references (and explicit `edges`), with
//! HKube's graph validation in HKube's order (reference §1.9 step 7).

use std::collections::HashMap;

use serde_json::Value;

use super::path::lookup;
use super::Error;
use crate::spec::{InputExpr, NodeKind, Pipeline, PipelineKind, Reference, Sign, Source};

/// Index of a node in declaration order.
pub type NodeId = usize;

/// How a child depends on one parent; a child may reference the same parent several ways.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Relation {
    /// `@P`: waits for all of P, receives its whole output.
    pub wait_node: bool,
    /// `#@P`: waits for all of P, fans out over its output.
    pub wait_batch: bool,
    /// `*@P`: one task per item of P, as soon as that item is done.
    pub wait_any: bool,
    /// An explicit `edges` entry: waits for all of P, passes no data.
    pub edge: bool,
}

impl Relation {
    /// Whether the child must wait for every task of the parent.
    pub fn waits_for_all(&self) -> bool {
        self.wait_node || self.wait_batch || self.edge
    }
}

#[derive(Debug, Clone)]
pub struct Parent {
    pub node: NodeId,
    pub relation: Relation,
}

#[derive(Debug, Clone)]
pub struct GraphNode {
    pub name: String,
    pub algorithm_name: String,
    /// One parsed expression per input item.
    pub inputs: Vec<InputExpr>,
    /// Distinct parents, in order of first reference.
    pub parents: Vec<Parent>,
    pub children: Vec<NodeId>,
    /// Has a batch token (`#@…`, `#[…]`): runs one task per item.
    pub is_batch: bool,
    /// Has a waitAny parent (`*@…`): runs one task (or batch) per parent item.
    pub wait_any: bool,
    /// Number of batch tokens in `inputs`, in document order.
    pub batch_tokens: usize,
}

impl GraphNode {
    /// Whether the child waits for every task of every parent (no waitAny-only parent).
    pub fn waits_for_all_parents(&self) -> bool {
        self.parents.iter().all(|p| p.relation.waits_for_all())
    }
}

#[derive(Debug, Clone)]
pub struct Graph {
    pub nodes: Vec<GraphNode>,
    by_name: HashMap<String, NodeId>,
}

/// Whether `@flowInput.…` references must resolve (execution) or not (storing a pipeline,
/// reference Q9).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlowInputCheck {
    Required,
    Skipped,
}

const RESERVED_NAMES: [&str; 2] = ["flowInput", "dataSource"];

impl Graph {
    /// Builds and validates the graph. The first error wins, in HKube's order: per node in
    /// declaration order (algorithm name, pipeline spec, duplicate, reserved name, then each
    /// input's references), then explicit edges, output-node rules and cycles. Checks HKube
    /// does not make (unsupported `*#@`, `*@` on a non-batch node) come last, so that every
    /// descriptor HKube rejects is rejected with HKube's text.
    pub fn build(pipeline: &Pipeline, flow_input: FlowInputCheck) -> Result<Graph, Error> {
        let mut by_name: HashMap<String, NodeId> = HashMap::with_capacity(pipeline.nodes.len());
        for (id, node) in pipeline.nodes.iter().enumerate() {
            by_name.entry(node.node_name.clone()).or_insert(id);
        }
        let mut nodes = Vec::with_capacity(pipeline.nodes.len());
        let mut seen: HashMap<&str, ()> = HashMap::with_capacity(pipeline.nodes.len());
        for node in &pipeline.nodes {
            let algorithm_name = match (node.kind, node.algorithm_name.as_deref()) {
                (NodeKind::Algorithm | NodeKind::Debug, None | Some("")) => {
                    return Err(Error::new("please provide algorithm name"))
                }
                (NodeKind::Pipeline, _) if node.spec_name().is_none() => {
                    return Err(Error::new("please provide pipeline name"))
                }
                (NodeKind::Output, None) => "output".to_string(),
                (_, name) => name.unwrap_or_default().to_string(),
            };
            if seen.insert(&node.node_name, ()).is_some() {
                return Err(Error::new(format!(
                    "found duplicate node \"{}\"",
                    node.node_name
                )));
            }
            if RESERVED_NAMES.contains(&node.node_name.as_str()) {
                return Err(Error::new(format!(
                    "pipeline \"{}\" has invalid reserved name \"{}\"",
                    pipeline.name, node.node_name
                )));
            }
            let mut inputs = Vec::with_capacity(node.input.len());
            for (index, item) in node.input.iter().enumerate() {
                let expr = InputExpr::parse(item, &node.node_name, index)?;
                let mut problem = None;
                expr.for_each_ref(&mut |reference| {
                    if problem.is_none() {
                        problem = check_reference(
                            reference,
                            node.node_name.as_str(),
                            pipeline,
                            flow_input,
                            &by_name,
                        );
                    }
                });
                if let Some(problem) = problem {
                    return Err(problem);
                }
                inputs.push(expr);
            }
            let batch_tokens = inputs.iter().map(count_batch_tokens).sum();
            nodes.push(GraphNode {
                name: node.node_name.clone(),
                algorithm_name,
                is_batch: batch_tokens > 0,
                batch_tokens,
                inputs,
                parents: Vec::new(),
                children: Vec::new(),
                wait_any: false,
            });
        }
        let mut graph = Graph { nodes, by_name };
        graph.link_references();
        graph.link_edges(pipeline);
        graph.check_output_nodes(pipeline)?;
        graph.check_cycles(pipeline.kind)?;
        graph.check_wait_any()?;
        Ok(graph)
    }

    pub fn id(&self, name: &str) -> Option<NodeId> {
        self.by_name.get(name).copied()
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Sinks: nodes no other node depends on.
    pub fn is_sink(&self, id: NodeId) -> bool {
        self.nodes[id].children.is_empty()
    }

    /// Nodes in an order where every parent comes before its children (declaration order
    /// among independent nodes).
    pub fn topological_order(&self) -> Vec<NodeId> {
        let mut pending: Vec<usize> = self.nodes.iter().map(|n| n.parents.len()).collect();
        let mut ready: std::collections::VecDeque<NodeId> = (0..self.nodes.len())
            .filter(|&id| pending[id] == 0)
            .collect();
        let mut order = Vec::with_capacity(self.nodes.len());
        while let Some(id) = ready.pop_front() {
            order.push(id);
            for &child in &self.nodes[id].children {
                pending[child] -= 1;
                if pending[child] == 0 {
                    ready.push_back(child);
                }
            }
        }
        order
    }

    /// `id` and every node that depends on it, directly or not.
    pub fn descendants(&self, id: NodeId) -> Vec<NodeId> {
        let mut marked = vec![false; self.nodes.len()];
        let mut stack = vec![id];
        let mut found = Vec::new();
        while let Some(next) = stack.pop() {
            if std::mem::replace(&mut marked[next], true) {
                continue;
            }
            found.push(next);
            stack.extend(self.nodes[next].children.iter().copied());
        }
        found.sort_unstable();
        found
    }

    fn add_relation(&mut self, parent: NodeId, child: NodeId, update: impl Fn(&mut Relation)) {
        let node = &mut self.nodes[child];
        match node.parents.iter_mut().find(|p| p.node == parent) {
            Some(existing) => update(&mut existing.relation),
            None => {
                let mut relation = Relation::default();
                update(&mut relation);
                node.parents.push(Parent {
                    node: parent,
                    relation,
                });
                self.nodes[parent].children.push(child);
            }
        }
    }

    fn link_references(&mut self) {
        for child in 0..self.nodes.len() {
            let mut links = Vec::new();
            for input in &self.nodes[child].inputs {
                input.for_each_ref(&mut |reference| {
                    if let Source::Node(name) = &reference.source {
                        if let Some(&parent) = self.by_name.get(name) {
                            links.push((parent, reference.sign));
                        }
                    }
                });
            }
            for (parent, sign) in links {
                self.add_relation(parent, child, |relation| match sign {
                    Sign::WaitNode => relation.wait_node = true,
                    Sign::WaitBatch => relation.wait_batch = true,
                    Sign::WaitAny | Sign::WaitAnyBatch => relation.wait_any = true,
                });
            }
            let wait_any = self.nodes[child]
                .parents
                .iter()
                .any(|p| p.relation.wait_any);
            self.nodes[child].wait_any = wait_any;
        }
    }

    /// Explicit edges to or from unknown nodes are ignored, as in HKube.
    fn link_edges(&mut self, pipeline: &Pipeline) {
        for edge in &pipeline.edges {
            if let (Some(source), Some(target)) = (self.id(&edge.source), self.id(&edge.target)) {
                self.add_relation(source, target, |relation| relation.edge = true);
            }
        }
    }

    fn check_output_nodes(&self, pipeline: &Pipeline) -> Result<(), Error> {
        for (id, node) in pipeline.nodes.iter().enumerate() {
            if node.kind != NodeKind::Output {
                continue;
            }
            if !self.nodes[id].children.is_empty() {
                return Err(Error::new(format!(
                    "node \"{}\" should not have child nodes",
                    node.node_name
                )));
            }
            if self.nodes[id].parents.is_empty() {
                return Err(Error::new(format!(
                    "node \"{}\" should have parent nodes",
                    node.node_name
                )));
            }
        }
        Ok(())
    }

    fn check_cycles(&self, kind: PipelineKind) -> Result<(), Error> {
        // Stream pipelines may loop (reference §1.7); a batch pipeline must be a DAG.
        if kind == PipelineKind::Batch && self.topological_order().len() != self.nodes.len() {
            return Err(Error::new(format!(
                "cyclic nodes are not allowed on {} pipeline",
                kind.as_str()
            )));
        }
        Ok(())
    }

    /// HKube accepts `*#@P` and `*@P` on a non-batch P, then never runs the child: the job hangs
    /// until its TTL (reference Q7, CC-26). Both are rejected here instead.
    fn check_wait_any(&self) -> Result<(), Error> {
        for node in &self.nodes {
            let mut problem = None;
            for input in &node.inputs {
                input.for_each_ref(&mut |reference| {
                    if problem.is_some() {
                        return;
                    }
                    let Source::Node(parent) = &reference.source else {
                        if reference.sign == Sign::WaitAny || reference.sign == Sign::WaitAnyBatch {
                            problem = Some(format!(
                                "node \"{}\" uses \"{}\", but waitAny (\"*@\") only applies to batch nodes; use \"@{}\"",
                                node.name,
                                reference.text(),
                                reference.dotted()
                            ));
                        }
                        return;
                    };
                    match reference.sign {
                        Sign::WaitAnyBatch => {
                            problem = Some(format!(
                                "node \"{}\" uses \"{}\": \"*#@\" is not supported; use \"*@{parent}\" for one task per item of \"{parent}\" or \"#@{parent}\" to fan out over its output",
                                node.name,
                                reference.text(),
                            ))
                        }
                        Sign::WaitAny => {
                            let is_batch = self.id(parent).is_some_and(|id| self.nodes[id].is_batch);
                            if !is_batch {
                                problem = Some(format!(
                                    "node \"{}\" uses \"{}\", but node \"{parent}\" is not a batch node, so it has no items to wait for; use \"@{parent}\"",
                                    node.name,
                                    reference.text(),
                                ));
                            }
                        }
                        Sign::WaitNode | Sign::WaitBatch => {}
                    }
                });
            }
            if let Some(problem) = problem {
                return Err(Error::new(problem));
            }
        }
        Ok(())
    }
}

fn count_batch_tokens(expr: &InputExpr) -> usize {
    let mut count = 0;
    expr.visit(&mut |leaf| {
        if is_batch_leaf(leaf) {
            count += 1;
        }
    });
    count
}

/// Whether a leaf is a batch token (`#@…` or `#[…]`).
pub fn is_batch_leaf(leaf: &InputExpr) -> bool {
    matches!(
        leaf,
        InputExpr::RawBatch(_)
            | InputExpr::Ref(Reference {
                sign: Sign::WaitBatch,
                ..
            })
    )
}

fn check_reference(
    reference: &Reference,
    node: &str,
    pipeline: &Pipeline,
    flow_input: FlowInputCheck,
    by_name: &HashMap<String, NodeId>,
) -> Option<Error> {
    match &reference.source {
        Source::FlowInput => {
            if flow_input == FlowInputCheck::Skipped || reference.path.is_empty() {
                return None;
            }
            let root = pipeline.flow_input.as_ref().unwrap_or(&Value::Null);
            match lookup(root, &reference.path) {
                Some(_) => None,
                None => Some(Error::new(format!("unable to find {}", reference.dotted()))),
            }
        }
        Source::DataSource => None,
        Source::Node(parent) => {
            if by_name.contains_key(parent) {
                None
            } else {
                Some(Error::new(format!(
                    "node \"{node}\" is depend on node \"{parent}\" which is not exists"
                )))
            }
        }
    }
}
