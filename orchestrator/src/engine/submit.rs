//! From a request to a [`JobPlan`]: HKube's validation steps in HKube's order (reference §1.9),
//! stored-pipeline merging, pipeline-in-pipeline expansion, exec-algorithm and run-from-node.
//!
//! Pure apart from catalog look-ups: the engine calls these from its loop, so the concurrency
//! check (step 3) sees a consistent count of running jobs.

use serde_json::{json, Map, Value};

use super::catalog::Catalog;
use super::job::{JobPlan, TaskRun};
use super::Error;
use crate::dag::{FlowInputCheck, Graph, NodeId};
use crate::spec::{self, InputExpr, Node, NodeKind, Pipeline, PipelineKind, Sign, Source};

/// How many unfinished jobs share a pipeline's `experimentName` + `name`.
pub type RunningCount<'a> = &'a dyn Fn(&str, &str) -> usize;

/// The outcome of the concurrency check (step 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    Run,
    /// `concurrentPipelines` reached with `rejectOnFailure: false`: queue the job.
    Hold,
}

/// `POST /exec/raw`.
pub fn raw(
    body: Value,
    catalog: &dyn Catalog,
    running: RunningCount,
) -> Result<(JobPlan, Admission), Error> {
    let pipeline = spec::parse_pipeline(body)?;
    prepare(pipeline, vec!["raw"], catalog, running)
}

/// `POST /exec/stored`: the stored pipeline deep-merged with the overrides, except `flowInput`,
/// which replaces the stored one when given.
pub fn stored(
    body: Value,
    catalog: &dyn Catalog,
    running: RunningCount,
) -> Result<(JobPlan, Admission), Error> {
    let pipeline = merge_stored(body, catalog)?;
    prepare(pipeline, vec!["stored"], catalog, running)
}

/// A stored pipeline started by its cron trigger (reference §1.5): as `POST /exec/stored`
/// with `{name}`, types `["stored", "internal", "cron"]`.
pub fn cron(
    body: Value,
    catalog: &dyn Catalog,
    running: RunningCount,
) -> Result<(JobPlan, Admission), Error> {
    let pipeline = merge_stored(body, catalog)?;
    prepare(
        pipeline,
        vec!["stored", "internal", "cron"],
        catalog,
        running,
    )
}

pub(super) fn merge_stored(body: Value, catalog: &dyn Catalog) -> Result<Pipeline, Error> {
    let Value::Object(mut overrides) = body else {
        return Err(Error::Invalid("data should be object".into()));
    };
    let name = required_name(&overrides)?;
    let stored = catalog
        .pipeline(&name)
        .ok_or_else(|| Error::not_found("pipeline", &name))?;
    let mut merged = serde_json::to_value(&stored).map_err(|e| Error::Invalid(e.to_string()))?;
    let flow_input = overrides.remove("flowInput");
    deep_merge(&mut merged, Value::Object(overrides));
    if let (Some(flow_input), Value::Object(map)) = (flow_input, &mut merged) {
        map.insert("flowInput".into(), flow_input);
    }
    Ok(spec::parse_pipeline(merged)?)
}

/// `POST /exec/algorithm`: `{name, input = [], debug = false}` runs the algorithm alone.
pub fn algorithm(
    body: Value,
    catalog: &dyn Catalog,
    running: RunningCount,
) -> Result<(JobPlan, Admission), Error> {
    let Value::Object(map) = body else {
        return Err(Error::Invalid("data should be object".into()));
    };
    if let Some(extra) = map
        .keys()
        .find(|k| !["name", "input", "debug"].contains(&k.as_str()))
    {
        return Err(Error::Invalid(format!(
            "data should NOT have additional properties ({extra})"
        )));
    }
    let name = required_name(&map)?;
    let input = match map.get("input") {
        None => Value::Array(Vec::new()),
        Some(Value::Array(items)) => Value::Array(items.clone()),
        Some(_) => return Err(Error::Invalid("data.input should be array".into())),
    };
    if catalog.algorithm(&name).is_none() {
        return Err(Error::not_found("algorithm", &name));
    }
    let pipeline = spec::parse_pipeline(json!({
        "name": name,
        "nodes": [{"nodeName": name, "algorithmName": name, "input": input}],
    }))?;
    prepare(pipeline, vec!["algorithm"], catalog, running)
}

/// The `name` of a request body, with ajv's texts when it is missing or not a string.
fn required_name(body: &Map<String, Value>) -> Result<String, Error> {
    match body.get("name") {
        Some(Value::String(name)) => Ok(name.clone()),
        Some(_) => Err(Error::Invalid("data.name should be string".into())),
        None => Err(Error::Invalid(
            "data should have required property 'name'".into(),
        )),
    }
}

/// Steps 2–8 of reference §1.9 for a pipeline that passed the schema.
pub fn prepare(
    pipeline: Pipeline,
    types: Vec<&'static str>,
    catalog: &dyn Catalog,
    running: RunningCount,
) -> Result<(JobPlan, Admission), Error> {
    // Step 3: concurrency.
    let mut admission = Admission::Run;
    if let Some(limit) = pipeline.options.concurrent_pipelines {
        if running(&pipeline.experiment_name, &pipeline.name) >= limit.amount as usize {
            if limit.reject_on_failure {
                return Err(Error::Invalid(format!(
                    "maximum number [{}] of concurrent pipelines has been reached",
                    limit.amount
                )));
            }
            admission = Admission::Hold;
        }
    }
    let expands = pipeline.nodes.iter().any(|n| n.kind == NodeKind::Pipeline);
    let user_pipeline = expands.then(|| pipeline.clone());
    // Step 4: pipeline-in-pipeline expansion.
    let pipeline = expand_pipeline_nodes(pipeline, catalog)?;
    // Step 5: algorithms exist and can run.
    check_algorithms(&pipeline, catalog)?;
    // Step 6: stream pipelines.
    check_stream(&pipeline, catalog)?;
    // Step 7: the graph, with the flowInput check.
    let graph = Graph::build(&pipeline, FlowInputCheck::Required)?;
    check_implemented(&pipeline)?;
    check_expanded_limits(&pipeline, &graph)?;
    let root_job_id = pipeline.root_job_id.clone();
    Ok((
        JobPlan {
            pipeline,
            user_pipeline,
            graph,
            types,
            root_job_id,
            cached: Vec::new(),
        },
        admission,
    ))
}

/// `POST /store/pipelines`: the schema with defaults, the node-list rules and the graph, but
/// not the flowInput check (reference Q9), then the algorithms.
///
/// hkube adds two refusals HKube does not have: a feature hkube does not implement
/// ([`check_implemented`]), and triggers that would make the pipeline start itself without
/// end ([`check_trigger_cycle`]).
pub fn validate_for_store(body: Value, catalog: &dyn Catalog) -> Result<Pipeline, Error> {
    let mut pipeline = spec::parse_pipeline(body)?;
    // Computed when shown (`GET /store/pipelines`), never stored.
    pipeline.extra.remove(crate::triggers::NEXT_RUN_KEY);
    Graph::build(&pipeline, FlowInputCheck::Skipped)?;
    check_algorithms(&pipeline, catalog)?;
    check_implemented(&pipeline)?;
    check_trigger_cycle(&pipeline, catalog)?;
    Ok(pipeline)
}

/// What `hkube validate` checks without a store: the schema and defaults, the stream rules,
/// the graph, what hkube does not implement, and the batch sizes that the descriptor alone
/// decides. Stored algorithms, stored pipelines and concurrency are the server's to check.
pub fn validate_offline(body: Value, flow_input: FlowInputCheck) -> Result<Pipeline, Error> {
    let pipeline = spec::parse_pipeline(body)?;
    check_stream(&pipeline, &super::MemoryCatalog::new())?;
    let graph = Graph::build(&pipeline, flow_input)?;
    check_implemented(&pipeline)?;
    if flow_input == FlowInputCheck::Required {
        check_expanded_limits(&pipeline, &graph)?;
    }
    Ok(pipeline)
}

/// Triggers that lead back to the pipeline being stored would start jobs without end (a
/// pipeline triggering itself made 25,956 jobs in 10 s): refused, naming the cycle in the
/// direction jobs would start, `ping → pong → ping`.
///
/// An edge `X → Y` means Y runs when X completes (Y lists X in `triggers.pipelines`). The
/// search starts at the pipeline, over the stored pipelines with this one's new definition in
/// place of its stored one.
fn check_trigger_cycle(pipeline: &Pipeline, catalog: &dyn Catalog) -> Result<(), Error> {
    if pipeline
        .triggers
        .as_ref()
        .is_none_or(|t| t.pipelines.is_empty())
    {
        return Ok(());
    }
    let me = pipeline.name.as_str();
    let children = |parent: &str| -> Vec<String> {
        let mut names: Vec<String> = catalog
            .triggered_by(parent)
            .into_iter()
            .map(|p| p.name)
            .filter(|name| name != me)
            .collect();
        if pipeline.is_triggered_by(parent) {
            names.push(me.to_string());
        }
        names
    };
    // Breadth first, so the cycle named is a shortest one.
    let mut reached_from: std::collections::HashMap<String, String> = Default::default();
    let mut queue = std::collections::VecDeque::from([me.to_string()]);
    while let Some(name) = queue.pop_front() {
        for child in children(&name) {
            if child == me {
                let mut path = vec![me.to_string(), name.clone()];
                let mut at = name;
                while let Some(previous) = reached_from.get(&at) {
                    path.push(previous.clone());
                    at = previous.clone();
                }
                path.reverse();
                // `path` now starts and ends with `me` when `name` is `me` itself (a
                // self-trigger) doubled once: keep one.
                path.dedup();
                if path.len() == 1 {
                    path.push(me.to_string());
                }
                return Err(Error::Invalid(format!(
                    "pipeline triggers form a cycle: {}; each job would start the next without \
                     end. Remove one of these pipelines from the triggers.pipelines of the next",
                    path.join(" → ")
                )));
            }
            if !reached_from.contains_key(&child) {
                reached_from.insert(child.clone(), name.clone());
                queue.push_back(child);
            }
        }
    }
    Ok(())
}

fn check_algorithms(pipeline: &Pipeline, catalog: &dyn Catalog) -> Result<(), Error> {
    for node in &pipeline.nodes {
        if !matches!(node.kind, NodeKind::Algorithm | NodeKind::Debug) {
            continue;
        }
        let Some(name) = node.algorithm_name.as_deref().filter(|n| !n.is_empty()) else {
            continue;
        };
        let algorithm = catalog
            .algorithm(name)
            .ok_or_else(|| Error::not_found("algorithm", name))?;
        if algorithm
            .algorithm_image
            .as_deref()
            .is_none_or(str::is_empty)
        {
            return Err(Error::Invalid(format!(
                "missing image for algorithm {name}"
            )));
        }
    }
    Ok(())
}

/// What HKube's schema accepts but hkube does not do is refused, naming the field and what to
/// do instead, rather than accepted and silently ignored: TensorBoard metrics never
/// collected, and node kinds hkube cannot run (which would hang). docs/semantics.md lists
/// them. A cron pattern the scheduler cannot parse is refused here too.
pub fn check_implemented(pipeline: &Pipeline) -> Result<(), Error> {
    // The schema's syntax check gives HKube's text; the parser, which schedules it, has the
    // last word and says what is wrong.
    if let Some(cron) = pipeline.triggers.as_ref().and_then(|t| t.cron.as_ref()) {
        crate::triggers::cron::Schedule::parse(&cron.pattern)
            .map_err(|error| Error::Invalid(error.to_string()))?;
    }
    for node in &pipeline.nodes {
        let unsupported = match node.kind {
            NodeKind::DataSource => Some("dataSource"),
            NodeKind::Gateway => Some("gateway"),
            NodeKind::HyperparamsTuner => Some("hyperparamsTuner"),
            _ => None,
        };
        if let Some(kind) = unsupported {
            return Err(Error::Invalid(format!(
                "node \"{}\" is of kind \"{kind}\", which hkube cannot run yet",
                node.node_name
            )));
        }
        let tensorboard = node
            .metrics
            .as_ref()
            .and_then(|m| m.get("tensorboard"))
            .and_then(Value::as_bool);
        if tensorboard == Some(true) {
            return Err(Error::Invalid(format!(
                "node \"{}\": metrics.tensorboard is not supported by hkube yet (no metrics \
                 would be collected); remove metrics or set tensorboard to false",
                node.node_name
            )));
        }
        let mut uses_data_source = false;
        for item in &node.input {
            if let Ok(expr) = InputExpr::parse(item, &node.node_name, 0) {
                expr.for_each_ref(&mut |r| uses_data_source |= r.source == Source::DataSource);
            }
        }
        if uses_data_source {
            return Err(Error::Invalid(format!(
                "node \"{}\" references \"@dataSource\", which hkube cannot resolve yet",
                node.node_name
            )));
        }
    }
    if pipeline.kind == PipelineKind::Stream {
        return Err(Error::Invalid(STREAM_NOT_SUPPORTED.into()));
    }
    Ok(())
}

const STREAM_NOT_SUPPORTED: &str =
    "stream pipelines are not supported by hkube yet; run this pipeline with kind \"batch\"";

/// Limits that need the expanded pipeline and its graph: the node count once pipeline nodes
/// are inlined, and the number of tasks of every batch node whose lists the descriptor alone
/// decides (raw batches `#[…]` and `#@flowInput…`), so that a 10k × 10k cartesian product is
/// refused at submission rather than failing the running job.
fn check_expanded_limits(pipeline: &Pipeline, graph: &Graph) -> Result<(), Error> {
    spec::check_node_count(pipeline.nodes.len())?;
    for (id, node) in graph.nodes.iter().enumerate() {
        if !node.is_batch || node.wait_any {
            continue;
        }
        let mut lens = Vec::with_capacity(node.batch_tokens);
        let mut known = true;
        for input in &node.inputs {
            input.visit(&mut |leaf| {
                if !crate::dag::is_batch_leaf(leaf) {
                    return;
                }
                match leaf {
                    InputExpr::RawBatch(values) => lens.push(values.len()),
                    InputExpr::Ref(reference) if reference.source == Source::FlowInput => lens
                        .push(
                            pipeline
                                .flow_input
                                .as_ref()
                                .and_then(|root| crate::dag::lookup(root, &reference.path))
                                .and_then(Value::as_array)
                                .map_or(0, Vec::len),
                        ),
                    _ => known = false,
                }
            });
        }
        if !known {
            continue;
        }
        let operation = pipeline.nodes[id].batch_operation();
        let count = crate::dag::combine(lens.clone(), operation).count();
        if count > super::MAX_TASKS_PER_NODE {
            let sizes: Vec<String> = lens.iter().map(usize::to_string).collect();
            let how = match operation {
                spec::BatchOperation::Cartesian => {
                    format!("the cartesian product of {}", sizes.join(" × "))
                }
                spec::BatchOperation::Indexed => format!("batch lists of {}", sizes.join(", ")),
            };
            return Err(Error::Invalid(format!(
                "node \"{}\" would run {count} tasks ({how}), more than the limit of {}; use \
                 batchOperation \"indexed\" or smaller batch inputs",
                node.name,
                super::MAX_TASKS_PER_NODE
            )));
        }
    }
    Ok(())
}

/// Stream pipelines: HKube's checks in its order (reference §1.7, CC-56), then a clear refusal,
/// as streaming is not implemented.
fn check_stream(pipeline: &Pipeline, catalog: &dyn Catalog) -> Result<(), Error> {
    let flows = pipeline.streaming.as_ref().and_then(|s| s.flows.as_ref());
    if pipeline.kind == PipelineKind::Batch {
        if flows.is_some_and(|f| !f.is_empty()) {
            return Err(Error::Invalid(
                "streaming flow is only allowed in stream pipeline".into(),
            ));
        }
        return Ok(());
    }
    let Some(flows) = flows.filter(|f| !f.is_empty()) else {
        return Err(Error::Invalid("please specify a stream flow".into()));
    };
    let default_flow = pipeline
        .streaming
        .as_ref()
        .and_then(|s| s.default_flow.clone());
    if flows.len() > 1 && default_flow.is_none() {
        return Err(Error::Invalid(
            "please specify a default stream flow".into(),
        ));
    }
    let mut targets = std::collections::HashSet::new();
    let mut sources = Vec::new();
    for (flow_name, flow) in flows {
        let text: String = flow
            .as_str()
            .unwrap_or_default()
            .chars()
            .filter(|c| !c.is_whitespace())
            .collect();
        if text.is_empty() {
            return Err(Error::Invalid(format!("invalid stream flow {flow_name}")));
        }
        for expression in text.split('|') {
            let parts: Vec<&str> = expression.split(">>").collect();
            if parts.len() < 2 {
                return Err(Error::Invalid(format!(
                    "stream flow {flow_name} should have valid flow, example: A >> B"
                )));
            }
            for pair in parts.windows(2) {
                if pair[1].is_empty() {
                    return Err(Error::Invalid(format!(
                        "invalid node name after {}",
                        pair[0]
                    )));
                }
                for name in pair[0].split('&').chain(pair[1].split('&')) {
                    if !pipeline.nodes.iter().any(|n| n.node_name == name) {
                        return Err(Error::Invalid(format!(
                            "invalid node {name} in stream flow {flow_name}"
                        )));
                    }
                }
                for source in pair[0].split('&') {
                    for target in pair[1].split('&') {
                        if source == target {
                            return Err(Error::Invalid(format!(
                                "invalid relation found {source} >> {target} in flow {flow_name}"
                            )));
                        }
                        sources.push(source.to_string());
                        targets.insert(target.to_string());
                    }
                }
            }
        }
    }
    for source in &sources {
        if targets.contains(source) {
            continue;
        }
        let Some(node) = pipeline.nodes.iter().find(|n| &n.node_name == source) else {
            continue;
        };
        if state_type(node, catalog) != spec::StateType::Stateful {
            return Err(Error::Invalid(format!(
                "entry node \"{source}\" cannot be stateless on stream pipeline"
            )));
        }
    }
    for node in &pipeline.nodes {
        if node.kind == NodeKind::Output {
            return Err(Error::Invalid(format!(
                "node \"{}\" from kind output can not be used in a streaming pipeline",
                node.node_name
            )));
        }
        for (index, item) in node.input.iter().enumerate() {
            let expr = InputExpr::parse(item, &node.node_name, index)?;
            let mut node_ref = false;
            expr.for_each_ref(&mut |r| {
                node_ref |= r.source != Source::DataSource && r.source != Source::FlowInput
            });
            if node_ref {
                return Err(Error::Invalid(
                    "the \"@\" sign is not allowed in \"stream\" pipeline, please use the \"streaming.flows\" property instead"
                        .into(),
                ));
            }
        }
    }
    Err(Error::Invalid(STREAM_NOT_SUPPORTED.into()))
}

fn state_type(node: &Node, catalog: &dyn Catalog) -> spec::StateType {
    if let Some(state) = node.state_type {
        return state;
    }
    node.algorithm_name
        .as_deref()
        .and_then(|name| catalog.algorithm(name))
        .and_then(|algorithm| algorithm.state_type)
        .unwrap_or(spec::StateType::Stateless)
}

/// Replaces each `kind: "pipeline"` node by the stored pipeline's nodes, renamed
/// `<node>-<inner>` (reference §2.7). References to the pipeline node from other nodes go to the
/// group's single sink (a group with several sinks cannot be referenced for data: the
/// reference must name one inner node, `@<node>-<inner>`); inputs of the pipeline node itself
/// become dependencies of the group's entry nodes. The stored flowInput is deep-merged into the
/// outer one.
fn expand_pipeline_nodes(mut pipeline: Pipeline, catalog: &dyn Catalog) -> Result<Pipeline, Error> {
    if pipeline.nodes.iter().all(|n| n.kind != NodeKind::Pipeline) {
        return Ok(pipeline);
    }
    let mut nodes = Vec::new();
    let mut sinks: std::collections::HashMap<String, Vec<String>> = Default::default();
    let mut edges = Vec::new();
    for node in std::mem::take(&mut pipeline.nodes) {
        if node.kind != NodeKind::Pipeline {
            nodes.push(node);
            continue;
        }
        let Some(name) = node.spec_name().map(str::to_string) else {
            return Err(Error::Invalid(format!(
                "node {} must have spec with name",
                node.node_name
            )));
        };
        let inner = catalog
            .pipeline(&name)
            .ok_or_else(|| Error::not_found("pipeline", &name))?;
        let inner_graph = Graph::build(&inner, FlowInputCheck::Skipped)?;
        let prefix = format!("{}-", node.node_name);
        let mut group_sinks = Vec::new();
        for (id, inner_node) in inner.nodes.iter().enumerate() {
            let mut renamed = inner_node.clone();
            renamed.node_name = format!("{prefix}{}", inner_node.node_name);
            renamed.input = inner_node
                .input
                .iter()
                .map(|item| {
                    rename_refs(
                        item,
                        &|n| inner.nodes.iter().any(|x| x.node_name == n),
                        &prefix,
                    )
                })
                .collect();
            renamed
                .extra
                .insert("origName".into(), json!(inner_node.node_name));
            if inner_graph.is_sink(id) {
                group_sinks.push(renamed.node_name.clone());
            }
            if inner_graph.nodes[id].parents.is_empty() {
                for item in &node.input {
                    if let Ok(expr) = InputExpr::parse(item, &node.node_name, 0) {
                        expr.for_each_ref(&mut |r| {
                            if let Source::Node(source) = &r.source {
                                edges.push((source.clone(), renamed.node_name.clone()));
                            }
                        });
                    }
                }
            }
            nodes.push(renamed);
        }
        if let Some(inner_flow) = inner.flow_input {
            let outer = pipeline
                .flow_input
                .get_or_insert_with(|| Value::Object(Map::new()));
            let mut merged = inner_flow;
            deep_merge(&mut merged, outer.clone());
            *outer = merged;
        }
        sinks.insert(node.node_name.clone(), group_sinks);
    }
    for node in &mut nodes {
        for item in &mut node.input {
            *item = redirect_refs(item, &sinks, &node.node_name)?;
        }
    }
    pipeline.nodes = nodes;
    for (source, target) in edges {
        pipeline.edges.push(spec::Edge {
            source,
            target,
            types: None,
        });
    }
    Ok(pipeline)
}

fn rename_refs(value: &Value, is_inner: &dyn Fn(&str) -> bool, prefix: &str) -> Value {
    map_ref_strings(value, &mut |text| {
        let (sign, rest) = split_sign(text)?;
        let (object, path) = rest
            .split_once('.')
            .map_or((rest, None), |(o, p)| (o, Some(p)));
        if !is_inner(object) {
            return None;
        }
        Some(match path {
            Some(path) => format!("{sign}{prefix}{object}.{path}"),
            None => format!("{sign}{prefix}{object}"),
        })
    })
}

fn redirect_refs(
    value: &Value,
    sinks: &std::collections::HashMap<String, Vec<String>>,
    node: &str,
) -> Result<Value, Error> {
    let mut problem = None;
    let value = map_ref_strings(value, &mut |text| {
        let (sign, rest) = split_sign(text)?;
        let (object, path) = rest
            .split_once('.')
            .map_or((rest, None), |(o, p)| (o, Some(p)));
        let group = sinks.get(object)?;
        if group.len() != 1 {
            problem = Some(Error::Invalid(format!(
                "node \"{node}\" references pipeline node \"{object}\", whose pipeline has {} sink nodes; reference one of them instead ({})",
                group.len(),
                group.join(", ")
            )));
            return None;
        }
        Some(match path {
            Some(path) => format!("{sign}{}.{path}", group[0]),
            None => format!("{sign}{}", group[0]),
        })
    });
    match problem {
        Some(problem) => Err(problem),
        None => Ok(value),
    }
}

fn split_sign(text: &str) -> Option<(&'static str, &str)> {
    for sign in [
        Sign::WaitAnyBatch,
        Sign::WaitBatch,
        Sign::WaitAny,
        Sign::WaitNode,
    ] {
        if let Some(rest) = text.strip_prefix(sign.prefix()) {
            return Some((sign.prefix(), rest));
        }
    }
    None
}

fn map_ref_strings(value: &Value, f: &mut dyn FnMut(&str) -> Option<String>) -> Value {
    match value {
        Value::String(text) => f(text).map(Value::String).unwrap_or_else(|| value.clone()),
        Value::Array(items) => {
            Value::Array(items.iter().map(|item| map_ref_strings(item, f)).collect())
        }
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(key, item)| (key.clone(), map_ref_strings(item, f)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// lodash `merge`: objects merge key by key, arrays index by index, anything else replaces.
pub fn deep_merge(target: &mut Value, source: Value) {
    match (target, source) {
        (Value::Object(target), Value::Object(source)) => {
            for (key, value) in source {
                match target.get_mut(&key) {
                    Some(existing) => deep_merge(existing, value),
                    None => {
                        target.insert(key, value);
                    }
                }
            }
        }
        (Value::Array(target), Value::Array(source)) => {
            for (index, value) in source.into_iter().enumerate() {
                match target.get_mut(index) {
                    Some(existing) => deep_merge(existing, value),
                    None => target.push(value),
                }
            }
        }
        (target, source) => *target = source,
    }
}

/// `POST /exec/caching`: a new pipeline `<name>-<node>` with the node and everything after it;
/// the nodes before it keep the outputs of the earlier job (reference §3.8).
pub fn run_from_node(
    original: &Pipeline,
    graph: &Graph,
    node_name: &str,
    outputs: &dyn Fn(NodeId) -> Vec<TaskRun>,
) -> Result<JobPlan, Error> {
    let Some(start) = graph.id(node_name) else {
        return Err(Error::Invalid(format!(
            "cant find relations for {node_name}"
        )));
    };
    if graph.nodes.iter().any(|n| n.wait_any) {
        let waiting = graph
            .nodes
            .iter()
            .find(|n| n.wait_any)
            .map_or("", |n| n.name.as_str());
        return Err(Error::Invalid(format!(
            "relation waitAny for node {waiting} is not allowed"
        )));
    }
    let run: Vec<NodeId> = graph.descendants(start);
    let mut keep = vec![false; graph.len()];
    let mut stack: Vec<NodeId> = run.clone();
    while let Some(id) = stack.pop() {
        if std::mem::replace(&mut keep[id], true) {
            continue;
        }
        stack.extend(graph.nodes[id].parents.iter().map(|p| p.node));
    }
    let mut pipeline = original.clone();
    pipeline.name = format!("{}-{node_name}", original.name);
    pipeline.nodes = original
        .nodes
        .iter()
        .enumerate()
        .filter(|&(id, _)| keep[id])
        .map(|(_, node)| node.clone())
        .collect();
    let new_graph = Graph::build(&pipeline, FlowInputCheck::Skipped)?;
    let cached = original
        .nodes
        .iter()
        .enumerate()
        .filter(|&(id, _)| keep[id] && !run.contains(&id))
        .filter_map(|(old, node)| new_graph.id(&node.node_name).map(|new| (new, outputs(old))))
        .collect();
    Ok(JobPlan {
        user_pipeline: None,
        pipeline,
        graph: new_graph,
        types: vec!["node"],
        root_job_id: None,
        cached,
    })
}
