//! A workflow drawn as SVG: steps as nodes, edges labelled with how they are taken, gates
//! drawn differently, and — for an execution — the path it took highlighted.
//!
//! The layout is `layout-rs` (a maintained Sugiyama-style layout with a GraphViz-like
//! input): the definition becomes DOT text, the crate lays it out and writes SVG.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use tollgate_model::definition::{Branch, StepKind};
use tollgate_model::records::StepRecord;
use tollgate_model::WorkflowDefinition;

/// The steps and edges an execution went through, from its step records in order.
#[derive(Debug, Default, Clone)]
pub struct Path {
    /// Step ids it ran.
    pub steps: BTreeSet<String>,
    /// (from, to) transitions between top-level steps.
    pub edges: BTreeSet<(String, String)>,
}

impl Path {
    /// The path of an execution with these records (children of parallel/foreach steps
    /// count for their parent).
    pub fn of(records: &[StepRecord]) -> Self {
        let mut path = Self::default();
        let mut last: Option<&str> = None;
        for record in records {
            let step = record
                .parent_step_id
                .as_deref()
                .unwrap_or(record.step_id.as_str());
            if record.step_id.starts_with('$') {
                continue;
            }
            path.steps.insert(step.to_owned());
            if let Some(previous) = last {
                if previous != step {
                    path.edges.insert((previous.to_owned(), step.to_owned()));
                }
            }
            last = Some(step);
        }
        path
    }
}

fn quoted(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            '\n' => out.push_str("\\n"),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn kind_label(kind: &StepKind) -> &'static str {
    match kind {
        StepKind::Condition { .. } => "condition",
        StepKind::Action { .. } => "action",
        StepKind::Execute { .. } => "execute",
        StepKind::Approval { .. } => "approval",
        StepKind::Wait { .. } => "wait",
        StepKind::FirstOf { .. } => "first of",
        StepKind::Parallel { .. } => "parallel",
        StepKind::Foreach { .. } => "foreach",
    }
}

/// A step's edges with the labels drawn on them: a `first_of` step's branches say which
/// gate takes them (the event type, the approval's outcome, `after` and its delay).
fn labelled_edges(step: &tollgate_model::Step) -> Vec<(String, &str)> {
    let StepKind::FirstOf { first_of } = &step.kind else {
        return step
            .edges()
            .into_iter()
            .map(|e| (e.label.to_owned(), e.target))
            .collect();
    };
    let mut edges = Vec::new();
    for branch in first_of {
        match branch {
            Branch::Event { event, next, .. } => {
                if let Some(next) = next {
                    edges.push((event.clone(), next.as_str()));
                }
            }
            Branch::Approval {
                on_approve,
                on_reject,
                ..
            } => {
                if let Some(next) = on_approve {
                    edges.push(("approved".to_owned(), next.as_str()));
                }
                if let Some(next) = on_reject {
                    edges.push(("rejected".to_owned(), next.as_str()));
                }
            }
            Branch::After { after, next } => {
                if let Some(next) = next {
                    edges.push((format!("after {after}"), next.as_str()));
                }
            }
        }
    }
    if let Some(target) = &step.on_error {
        edges.push(("on_error".to_owned(), target.as_str()));
    }
    edges
}

/// The definition as DOT text.
pub fn dot(definition: &WorkflowDefinition, path: Option<&Path>) -> String {
    let mut out = String::from("digraph workflow {\n");
    let taken = |id: &str| path.is_some_and(|p| p.steps.contains(id));
    for step in &definition.steps {
        let gate = step.gate_kind().is_some();
        let (fill, color) = match (taken(&step.id), gate) {
            (true, true) => ("#fde68a", "#b45309"),
            (true, false) => ("#bbf7d0", "#15803d"),
            (false, true) => ("#fef3c7", "#92400e"),
            (false, false) => ("#f8fafc", "#475569"),
        };
        let shape = if gate { "Mrecord" } else { "box" };
        let label = format!("{}\n{}", step.id, kind_label(&step.kind));
        let label = if gate {
            format!("{{{}|{}}}", step.id, kind_label(&step.kind))
        } else {
            label
        };
        let _ = writeln!(
            out,
            "  {} [shape={shape} label={} fillcolor=\"{fill}\" color=\"{color}\" width=2];",
            quoted(&step.id),
            quoted(&label)
        );
    }
    for step in &definition.steps {
        for (label, target) in labelled_edges(step) {
            if definition.step(target).is_none() {
                continue;
            }
            let hot = path.is_some_and(|p| p.edges.contains(&(step.id.clone(), target.to_owned())));
            let (color, width) = if hot { ("#15803d", 3) } else { ("#64748b", 1) };
            let _ = writeln!(
                out,
                "  {} -> {} [label={} color=\"{color}\" penwidth={width}];",
                quoted(&step.id),
                quoted(target),
                quoted(&label)
            );
        }
    }
    out.push('}');
    out
}

/// Renders the definition (and optionally an execution's path) as an SVG document.
/// The layout crate is guarded: if it fails on some shape of graph, a plain list of the
/// steps is drawn instead, never an error page.
pub fn svg(definition: &WorkflowDefinition, path: Option<&Path>) -> String {
    let text = dot(definition, path);
    let rendered = std::panic::catch_unwind(|| {
        let mut parser = layout::gv::DotParser::new(&text);
        let graph = parser.process().ok()?;
        let mut builder = layout::gv::GraphBuilder::new();
        builder.visit_graph(&graph);
        let mut visual = builder.get();
        let mut writer = layout::backends::svg::SVGWriter::new();
        visual.do_it(false, false, false, &mut writer);
        Some(writer.finalize())
    });
    match rendered {
        Ok(Some(svg)) => svg,
        _ => fallback(definition, path),
    }
}

fn fallback(definition: &WorkflowDefinition, path: Option<&Path>) -> String {
    let height = 30 * definition.steps.len() + 20;
    let mut out = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"420\" height=\"{height}\" font-family=\"sans-serif\" font-size=\"14\">"
    );
    for (i, step) in definition.steps.iter().enumerate() {
        let y = 20 + 30 * i;
        let fill = if path.is_some_and(|p| p.steps.contains(&step.id)) {
            "#15803d"
        } else {
            "#334155"
        };
        let _ = write!(
            out,
            "<text x=\"10\" y=\"{y}\" fill=\"{fill}\">{} ({})</text>",
            escape(&step.id),
            kind_label(&step.kind)
        );
    }
    out.push_str("</svg>");
    out
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_step_and_edge_label_is_drawn() {
        let doc = serde_json::json!({"workflow_id": "w", "version": "1", "steps": [
            {"id": "check", "type": "condition", "condition": {"field": "x", "operator": "gt", "value": 1}, "on_true": "gate", "on_false": "ok"},
            {"id": "gate", "type": "approval", "approval": {"approvers": {"role": "m"}}, "on_approve": "ok", "on_reject": "no"},
            {"id": "ok", "type": "action", "action": "allow"},
            {"id": "no", "type": "action", "action": "block"}]});
        let definition = tollgate_model::load(&doc).unwrap().definition;
        let svg = svg(&definition, None);
        assert!(svg.starts_with("<svg") || svg.contains("<svg"), "{svg}");
        for id in [
            "check",
            "gate",
            "ok",
            "no",
            "on_true",
            "on_false",
            "on_approve",
            "on_reject",
        ] {
            assert!(svg.contains(id), "{id} missing");
        }
    }

    #[test]
    fn a_first_of_step_draws_each_gate_as_its_own_edge() {
        let doc = serde_json::json!({"workflow_id": "w", "version": "1", "steps": [
            {"id": "settle", "type": "first_of", "first_of": [
                {"event": "payment.settled", "next": "ship"},
                {"event": "order.cancelled", "next": "refund"},
                {"approval": {"approvers": {"role": "ops"}}, "on_approve": "ship", "on_reject": "refund"},
                {"after": "3d", "next": "escalate"}]},
            {"id": "ship", "type": "action", "action": "allow"},
            {"id": "refund", "type": "action", "action": "block"},
            {"id": "escalate", "type": "action", "action": "block"}]});
        let definition = tollgate_model::load(&doc).unwrap().definition;
        let text = dot(&definition, None);
        for edge in [
            r#""settle" -> "ship" [label="payment.settled""#,
            r#""settle" -> "refund" [label="order.cancelled""#,
            r#""settle" -> "ship" [label="approved""#,
            r#""settle" -> "refund" [label="rejected""#,
            r#""settle" -> "escalate" [label="after 3d""#,
        ] {
            assert!(text.contains(edge), "{edge} missing from {text}");
        }
        assert!(text.contains("first of"), "{text}");
        let svg = svg(&definition, None);
        assert!(
            svg.contains("payment.settled") && svg.contains("after 3d"),
            "{svg}"
        );
    }
}
