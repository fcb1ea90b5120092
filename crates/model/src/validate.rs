//! Semantic checks on a parsed definition (docs/workflow-format.md, "Validation"): ids, references,
//! gates inside parallel/foreach, approvers and quorum, regexes, reachability.

use std::collections::{HashMap, HashSet, VecDeque};
use std::str::FromStr;

use serde_json::Value;

use crate::condition::{Condition, Operator};
use crate::definition::{
    ApprovalSpec, Approvers, Branch, NotifySpec, OnTimeout, Required, Step, StepKind,
    SubActionKind, Trigger, Verb, WorkflowDefinition, NOTIFY_CHANNELS, PRIORITIES,
};
use crate::problem::{Path, Report};

/// Validates a definition built in code (one that did not come through the parser).
pub fn validate(definition: &WorkflowDefinition) -> Report {
    let mut report = Report::default();
    let mut ids = HashSet::new();
    collect_ids(&definition.steps, &mut ids);
    check(definition, &ids, &mut report);
    report
}

fn collect_ids(steps: &[Step], ids: &mut HashSet<String>) {
    for step in steps {
        ids.insert(step.id.clone());
        collect_ids(step.children(), ids);
    }
}

/// Whether `id` is a valid step or workflow id: `[A-Za-z0-9_.-]+`.
pub fn is_valid_id(id: &str) -> bool {
    !id.is_empty()
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

fn is_template(s: &str) -> bool {
    s.contains("{{") || s.contains("${")
}

pub(crate) fn check(def: &WorkflowDefinition, all_ids: &HashSet<String>, report: &mut Report) {
    let root = Path::root();
    if !def.workflow_id.is_empty() && !is_valid_id(&def.workflow_id) {
        report.error(
            &root.key("workflow_id"),
            format!(
                "`{}` is not a valid id: use letters, digits, `_`, `.` and `-`",
                def.workflow_id
            ),
        );
    }
    if def.version.trim().is_empty() && report.errors.iter().all(|p| p.path != "version") {
        report.error(&root.key("version"), "must not be empty");
    }
    check_trigger(&def.trigger, &root.key("trigger"), report);
    for (i, resource) in def.context.load.iter().enumerate() {
        if resource.is_empty() || resource.split('.').any(str::is_empty) {
            report.error(
                &root.key("context").key("load").index(i),
                format!("`{resource}` is not a dotted resource name such as `customer.profile`"),
            );
        }
    }
    if def.timeout.is_some_and(|t| t.as_millis() == 0) {
        report.error(&root.key("timeout"), "must be longer than zero");
    }
    let steps_path = root.key("steps");
    if def.steps.is_empty() && report.errors.iter().all(|p| p.path != "steps") {
        report.error(&steps_path, "a workflow needs at least one step");
        return;
    }

    let top_ids: HashSet<&str> = def.steps.iter().map(|s| s.id.as_str()).collect();
    let mut seen: HashMap<String, String> = HashMap::new();
    let mut walker = Walker {
        report,
        all_ids,
        top_ids: &top_ids,
        seen: &mut seen,
    };
    walker.steps(&def.steps, &steps_path, None);

    warn_unreachable(def, &steps_path, report);
    for (location, message) in crate::paths::check_against_input(def) {
        let problem = crate::Problem::new(location, message);
        if def.strict_paths {
            report.errors.push(problem);
        } else {
            report.warnings.push(problem);
        }
    }
}

fn check_trigger(trigger: &Trigger, path: &Path, report: &mut Report) {
    match trigger {
        Trigger::Event { event } => {
            let star = event.find('*');
            if event.is_empty() {
                report.error(&path.key("event"), "must name an event type or pattern");
            } else if star.is_some_and(|at| at != event.len() - 1) {
                report.error(
                    &path.key("event"),
                    format!("`{event}`: `*` may only end the pattern (`order.*`, or `*` alone)"),
                );
            }
        }
        Trigger::Manual => {}
        Trigger::Schedule { cron, timezone } => {
            if let Err(err) = crate::schedule::parse_cron(cron) {
                report.error(&path.key("cron"), err);
            }
            if let Some(tz) = timezone {
                if chrono_tz::Tz::from_str(tz).is_err() {
                    report.error(
                        &path.key("timezone"),
                        format!(
                            "unknown time zone `{tz}` (use an IANA name such as \"Europe/Berlin\")"
                        ),
                    );
                }
            }
        }
    }
}

/// The kind of container a step is nested in.
#[derive(Clone, Copy)]
enum Parent<'a> {
    Parallel(&'a str),
    Foreach(&'a str),
}

impl Parent<'_> {
    fn describe(self) -> String {
        match self {
            Parent::Parallel(id) => format!("parallel step `{id}`"),
            Parent::Foreach(id) => format!("foreach step `{id}`"),
        }
    }
}

struct Walker<'r, 'd> {
    report: &'r mut Report,
    all_ids: &'r HashSet<String>,
    top_ids: &'r HashSet<&'d str>,
    /// Step id → path where it was first defined.
    seen: &'r mut HashMap<String, String>,
}

impl<'d> Walker<'_, 'd> {
    fn steps(&mut self, steps: &'d [Step], path: &Path, parent: Option<Parent<'d>>) {
        for (i, step) in steps.iter().enumerate() {
            self.step(step, &path.index(i), parent);
        }
    }

    fn step(&mut self, step: &'d Step, p: &Path, parent: Option<Parent<'d>>) {
        if !step.id.is_empty() {
            if !is_valid_id(&step.id) {
                self.report.error(
                    &p.key("id"),
                    format!(
                        "`{}` is not a valid step id: use letters, digits, `_`, `.` and `-`",
                        step.id
                    ),
                );
            }
            match self.seen.get(&step.id) {
                Some(first) => {
                    let msg = format!("duplicate step id `{}` (first defined at {first})", step.id);
                    self.report.error(&p.key("id"), msg);
                }
                None => {
                    self.seen.insert(step.id.clone(), p.to_string());
                }
            }
        }
        if step.timeout.is_some_and(|t| t.as_millis() == 0) {
            self.report
                .error(&p.key("timeout"), "must be longer than zero");
        }

        match parent {
            Some(parent) => {
                if let Some(gate) = step.gate_kind() {
                    let what = match gate {
                        crate::definition::GateKind::Approval => "an approval gate",
                        crate::definition::GateKind::Wait => "a wait gate",
                        crate::definition::GateKind::FirstOf => "a first_of gate",
                    };
                    self.report.error(p, format!(
                        "step `{}` is {what}, and gates cannot be inside {}: move it to the top level",
                        step.id, parent.describe()
                    ));
                }
                for (path, label, _) in edge_locations(step, p) {
                    self.report.error(
                        &path,
                        format!(
                            "steps inside {} run as a group and cannot jump elsewhere: remove `{label}`",
                            parent.describe(),
                        ),
                    );
                }
            }
            None => {
                for (path, _, target) in edge_locations(step, p) {
                    if self.top_ids.contains(target) {
                        continue;
                    }
                    let msg = if self.all_ids.contains(target) {
                        format!("`{target}` is inside a parallel or foreach step and cannot be jumped to")
                    } else {
                        format!("references step `{target}`, which does not exist")
                    };
                    self.report.error(&path, msg);
                }
            }
        }

        match &step.kind {
            StepKind::Condition { condition, .. } => {
                check_condition(condition, &p.key("condition"), self.report);
            }
            StepKind::Action {
                action,
                execute,
                on_approve,
                on_reject,
                ..
            } => {
                self.sub_actions(execute, p);
                let approvals: Vec<usize> = execute
                    .iter()
                    .enumerate()
                    .filter(|(_, s)| matches!(s.kind, SubActionKind::CreateApprovalRequest(_)))
                    .map(|(i, _)| i)
                    .collect();
                if approvals.len() > 1 {
                    self.report.error(
                        &p.key("execute").index(approvals[1]),
                        "a step can request only one approval",
                    );
                }
                if approvals.is_empty() {
                    if action.verb == Verb::RequireApproval {
                        self.report.error(&p.key("action").key("type"), "`require_approval` needs a `create_approval_request` sub-action naming the approver_role (or use an `approval` step)");
                    }
                    for (label, target) in [("on_approve", on_approve), ("on_reject", on_reject)] {
                        if target.is_some() {
                            self.report.error(&p.key(label), format!("`{label}` only applies to approval gates; this action requests no approval"));
                        }
                    }
                }
            }
            StepKind::Execute { execute, .. } => {
                if execute.is_empty() {
                    self.report.error(
                        &p.key("execute"),
                        "an execute step needs at least one sub-action",
                    );
                }
                self.sub_actions(execute, p);
            }
            StepKind::Approval { approval, .. } => {
                check_approvers(
                    &approval.approvers,
                    approval.required,
                    &p.key("approval"),
                    self.report,
                );
                if approval.timeout.is_some_and(|t| t.as_millis() == 0) {
                    self.report.error(
                        &p.key("approval").key("timeout"),
                        "must be longer than zero",
                    );
                }
                check_ladder(approval, &p.key("approval"), self.report);
            }
            StepKind::Wait { wait, .. } => {
                if wait.event.is_empty()
                    && self
                        .report
                        .errors
                        .iter()
                        .all(|e| !e.path.starts_with(&p.key("wait").to_string()))
                {
                    self.report.error(
                        &p.key("wait").key("event"),
                        "must name the event type awaited",
                    );
                }
                if let Some(m) = &wait.match_ {
                    let at = p.key("wait").key("match");
                    check_condition(m, &at, self.report);
                    if m.key_leaves().is_empty() {
                        self.report.warning(
                            &at,
                            format!(
                                "wait step `{}` has no `eq` of an event field (`event.…`) with a value outside `or`/`not`: every `{}` event will be checked against every execution waiting here instead of finding them by key",
                                step.id, wait.event
                            ),
                        );
                    }
                    if uses_secrets(m) {
                        self.report.error(
                            &at,
                            "a wait's `match` may not use `secrets.…`: its values are rendered when the wait is entered and stored with the execution, where any reader would see them",
                        );
                    }
                }
            }
            StepKind::FirstOf { first_of } => self.first_of(step, first_of, &p.key("first_of")),
            StepKind::Parallel { parallel, .. } => {
                let children = p.key("parallel").key("steps");
                if parallel.steps.is_empty() {
                    self.report
                        .error(&children, "a parallel step needs at least one child step");
                }
                self.steps(&parallel.steps, &children, Some(Parent::Parallel(&step.id)));
            }
            StepKind::Foreach { foreach, .. } => {
                let fp = p.key("foreach");
                if foreach.items.trim().is_empty() {
                    self.report.error(
                        &fp.key("items"),
                        "must name the collection, e.g. \"order.lines\"",
                    );
                }
                if !is_valid_var(&foreach.item_var) {
                    self.report.error(&fp.key("item_var"), format!("`{}` is not a valid variable name (letters, digits and `_`, not starting with a digit)", foreach.item_var));
                }
                if foreach.steps.is_empty() {
                    self.report.error(
                        &fp.key("steps"),
                        "a foreach step needs at least one child step",
                    );
                }
                self.steps(
                    &foreach.steps,
                    &fp.key("steps"),
                    Some(Parent::Foreach(&step.id)),
                );
            }
        }
    }

    fn sub_actions(&mut self, execute: &[crate::definition::SubAction], p: &Path) {
        for (i, sub) in execute.iter().enumerate() {
            let sp = p.key("execute").index(i);
            match &sub.kind {
                SubActionKind::Webhook(req) => {
                    if req.url.trim().is_empty() && !self.has_error_at(&sp.key("url")) {
                        self.report.error(&sp.key("url"), "must not be empty");
                    }
                    let method = req.method.to_ascii_uppercase();
                    if !is_template(&req.method)
                        && !["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]
                            .contains(&method.as_str())
                    {
                        self.report.error(
                            &sp.key("method"),
                            format!("unknown HTTP method `{}`", req.method),
                        );
                    }
                    if req.timeout.is_some_and(|t| t.as_millis() == 0) {
                        self.report
                            .error(&sp.key("timeout"), "must be longer than zero");
                    }
                }
                SubActionKind::Notify { recipients, .. } => {
                    if recipients.is_empty() {
                        self.report.error(
                            &sp.key("recipients"),
                            "a notification needs at least one recipient",
                        );
                    }
                }
                SubActionKind::Set { values } => {
                    if values.is_empty() {
                        self.report.error(&sp, "`set` needs `values` (an object of context paths to values) or `path` and `value`");
                    }
                    for key in values.keys() {
                        if key.is_empty() || key.split('.').any(str::is_empty) {
                            self.report.error(
                                &sp.key("values").key(key),
                                format!("`{key}` is not a dotted context path"),
                            );
                        }
                    }
                }
                SubActionKind::UpdateRecord { data, .. }
                | SubActionKind::CreateRecord { data, .. } => {
                    if !data.is_object() {
                        self.report.error(&sp.key("data"), "must be an object");
                    }
                }
                SubActionKind::CreateApprovalRequest(req) => {
                    check_approvers(
                        &req.approval.approvers,
                        req.approval.required,
                        &sp.key("data"),
                        self.report,
                    );
                }
                SubActionKind::Log { .. } => {}
            }
        }
    }

    /// A `first_of` step: at least two gates, at most one approval and one `after`, each
    /// gate checked as its own step kind would be.
    fn first_of(&mut self, step: &Step, branches: &[Branch], p: &Path) {
        if branches.len() < 2
            && !self
                .report
                .errors
                .iter()
                .any(|e| e.path.starts_with(&p.to_string()))
        {
            self.report.error(
                p,
                format!("a first_of step needs at least two gates (it has {}): with one, use a wait or approval step", branches.len()),
            );
        }
        let mut approval_at = None;
        let mut after_at = None;
        for (j, branch) in branches.iter().enumerate() {
            let bp = p.index(j);
            match branch {
                Branch::Event { event, match_, .. } => {
                    if event.is_empty() && !self.has_error_at(&bp.key("event")) {
                        self.report
                            .error(&bp.key("event"), "must name the event type awaited");
                    }
                    if let Some(m) = match_ {
                        let at = bp.key("match");
                        check_condition(m, &at, self.report);
                        if m.key_leaves().is_empty() {
                            self.report.warning(
                                &at,
                                format!(
                                    "gate {j} of first_of step `{}` has no `eq` of an event field (`event.…`) with a value outside `or`/`not`: every `{event}` event will be checked against every execution waiting here instead of finding them by key",
                                    step.id
                                ),
                            );
                        }
                        if uses_secrets(m) {
                            self.report.error(
                                &at,
                                "a gate's `match` may not use `secrets.…`: its values are rendered when the step is entered and stored with the execution, where any reader would see them",
                            );
                        }
                    }
                }
                Branch::Approval { approval, .. } => {
                    if let Some(first) = approval_at {
                        self.report.error(
                            &bp.key("approval"),
                            format!("a first_of step may request only one approval (the first is gate {first})"),
                        );
                    }
                    approval_at.get_or_insert(j);
                    check_approvers(
                        &approval.approvers,
                        approval.required,
                        &bp.key("approval"),
                        self.report,
                    );
                    if approval.timeout.is_some() {
                        self.report.error(
                            &bp.key("approval").key("timeout"),
                            "an approval inside first_of has no timeout of its own: add an `after` gate, which closes the approval as superseded when it fires first",
                        );
                    }
                    if approval.on_timeout != OnTimeout::Reject {
                        self.report.error(
                            &bp.key("approval").key("on_timeout"),
                            "an approval inside first_of has no timeout of its own: put the step to go to on an `after` gate",
                        );
                    }
                }
                Branch::After { after, .. } => {
                    if let Some(first) = after_at {
                        self.report.error(
                            &bp.key("after"),
                            format!("a first_of step may have only one `after` gate (the first is gate {first}): only the earliest could ever fire"),
                        );
                    }
                    after_at.get_or_insert(j);
                    if after.as_millis() == 0 {
                        self.report
                            .error(&bp.key("after"), "must be longer than zero");
                    }
                }
            }
        }
        if !branches.is_empty() && branches.iter().all(|b| matches!(b, Branch::After { .. })) {
            self.report.error(
                p,
                "a first_of step needs an event or approval gate besides `after` (a deadline alone never has anything to race)",
            );
        }
    }

    fn has_error_at(&self, path: &Path) -> bool {
        let path = path.to_string();
        self.report.errors.iter().any(|e| e.path == path)
    }
}

/// Every successor edge of `step` with the path of the field that names it.
fn edge_locations<'s>(step: &'s Step, p: &Path) -> Vec<(Path, &'static str, &'s str)> {
    let StepKind::FirstOf { first_of } = &step.kind else {
        return step
            .edges()
            .into_iter()
            .map(|e| (edge_path(step, p, e.label), e.label, e.target))
            .collect();
    };
    let mut out = Vec::new();
    for (j, branch) in first_of.iter().enumerate() {
        let bp = p.key("first_of").index(j);
        let targets: [(&'static str, Option<&'s String>); 2] = match branch {
            Branch::Event { next, .. } | Branch::After { next, .. } => {
                [("next", next.as_ref()), ("next", None)]
            }
            Branch::Approval {
                on_approve,
                on_reject,
                ..
            } => [
                ("on_approve", on_approve.as_ref()),
                ("on_reject", on_reject.as_ref()),
            ],
        };
        for (label, target) in targets {
            if let Some(target) = target {
                out.push((bp.key(label), label, target.as_str()));
            }
        }
    }
    if let Some(target) = &step.on_error {
        out.push((p.key("on_error"), "on_error", target.as_str()));
    }
    out
}

fn edge_path(step: &Step, p: &Path, label: &str) -> Path {
    match (&step.kind, label) {
        (StepKind::Approval { .. }, "on_timeout") => p.key("approval").key("on_timeout"),
        (StepKind::Wait { .. }, "on_timeout") => p.key("wait").key("on_timeout"),
        _ => p.key(label),
    }
}

fn is_valid_var(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn check_approvers(approvers: &Approvers, required: Required, path: &Path, report: &mut Report) {
    if approvers.roles.is_empty() && approvers.users.is_empty() {
        report.error(
            &path.key("approvers"),
            "an approval needs approvers: a role, roles or users",
        );
        return;
    }
    for (i, role) in approvers.roles.iter().enumerate() {
        if role.trim().is_empty() {
            report.error(
                &path.key("approvers").key("roles").index(i),
                "a role name must not be empty",
            );
        }
    }
    let mut seen = HashSet::new();
    for (i, user) in approvers.users.iter().enumerate() {
        if !seen.insert(user) {
            report.error(
                &path.key("approvers").key("users").index(i),
                format!("user `{user}` is listed twice: each approver counts once"),
            );
        }
    }
    match required {
        Required::All if !approvers.roles.is_empty() || approvers.users.is_empty() => {
            report.error(&path.key("required"), "`\"all\"` needs a list of users and no roles (the holders of a role are not known in advance)");
        }
        Required::Count(n) if approvers.roles.is_empty() => {
            let distinct: HashSet<&String> = approvers.users.iter().collect();
            if n as usize > distinct.len() {
                report.error(
                    &path.key("required"),
                    format!(
                        "requires {n} approvals but only {} distinct users may approve",
                        distinct.len()
                    ),
                );
            }
        }
        _ => {}
    }
}

/// Whether any value of a condition tree refers to a secret (`{{secrets.…}}`,
/// `${secrets.…}`, or the field path `secrets.…`).
fn uses_secrets(condition: &Condition) -> bool {
    fn in_value(value: &serde_json::Value) -> bool {
        match value {
            serde_json::Value::String(s) => {
                let compact: String = s.chars().filter(|c| !c.is_whitespace()).collect();
                compact.contains("{{secrets.") || compact.contains("${secrets.")
            }
            serde_json::Value::Array(items) => items.iter().any(in_value),
            serde_json::Value::Object(map) => map.values().any(in_value),
            _ => false,
        }
    }
    match condition {
        Condition::And { and } => and.iter().any(uses_secrets),
        Condition::Or { or } => or.iter().any(uses_secrets),
        Condition::Not { not } => uses_secrets(not),
        Condition::Leaf(leaf) => {
            leaf.field.starts_with("secrets.") || leaf.value.as_ref().is_some_and(in_value)
        }
    }
}

/// Checks a condition tree: fields present, regexes compile, `in` has an array.
pub(crate) fn check_condition(condition: &Condition, path: &Path, report: &mut Report) {
    match condition {
        Condition::And { and: children } | Condition::Or { or: children } => {
            let key = if matches!(condition, Condition::And { .. }) {
                "and"
            } else {
                "or"
            };
            for (i, child) in children.iter().enumerate() {
                check_condition(child, &path.key(key).index(i), report);
            }
        }
        Condition::Not { not } => check_condition(not, &path.key("not"), report),
        Condition::Leaf(leaf) => {
            let literal = match &leaf.value {
                Some(Value::String(s)) if is_template(s) => None,
                other => other.as_ref(),
            };
            match (leaf.operator, literal) {
                (Operator::Regex, Some(Value::String(pattern))) => {
                    if let Err(err) = regex::RegexBuilder::new(pattern)
                        .size_limit(1 << 20)
                        .build()
                    {
                        report.error(
                            &path.key("value"),
                            format!("invalid regular expression: {err}"),
                        );
                    }
                }
                (Operator::Regex, Some(other)) => {
                    report.error(
                        &path.key("value"),
                        format!("`regex` needs a string pattern, not {other}"),
                    );
                }
                (Operator::In | Operator::NotIn, Some(v)) if !v.is_array() => {
                    report.error(
                        &path.key("value"),
                        format!("`{}` needs an array of values", leaf.operator),
                    );
                }
                _ => {}
            }
        }
    }
}

fn warn_unreachable(def: &WorkflowDefinition, steps_path: &Path, report: &mut Report) {
    // No steps is an error reported elsewhere; nothing can be unreachable.
    if def.steps.is_empty() {
        return;
    }
    let index: HashMap<&str, usize> = def
        .steps
        .iter()
        .enumerate()
        .map(|(i, s)| (s.id.as_str(), i))
        .collect();
    let mut reached = vec![false; def.steps.len()];
    let mut queue = VecDeque::from([0usize]);
    reached[0] = true;
    while let Some(i) = queue.pop_front() {
        for edge in def.steps[i].edges() {
            if let Some(&j) = index.get(edge.target) {
                if !reached[j] {
                    reached[j] = true;
                    queue.push_back(j);
                }
            }
        }
    }
    for (i, step) in def.steps.iter().enumerate() {
        if !reached[i] {
            report.warning(
                &steps_path.index(i),
                format!(
                    "step `{}` is never reached from the first step `{}`",
                    step.id, def.steps[0].id
                ),
            );
        }
    }
}

/// An approval's `notify`, `reminders` and `escalate` (docs/notifications.md): known
/// channels, an address for email, and rungs after the request, in order, before the
/// deadline.
/// `priority` and `due`: a literal must be one of the priorities, or a duration; a
/// template is checked when it renders (a bad value then counts as none, with a warning).
fn check_sla(approval: &ApprovalSpec, at: &Path, report: &mut Report) {
    let Some(service) = &approval.service else {
        return;
    };
    let literal = |t: &str| !t.contains("{{");
    if let Some(p) = service.priority.as_deref().filter(|p| literal(p)) {
        if !PRIORITIES.contains(&p) {
            report.error(
                &at.key("priority"),
                format!(
                    "unknown priority `{p}`: use one of {}, or a template",
                    PRIORITIES.join(", ")
                ),
            );
        }
    }
    if let Some(due) = service.due.as_deref().filter(|d| literal(d)) {
        match crate::duration::Duration::from_str(due) {
            Ok(d) if d.as_millis() == 0 => report.error(&at.key("due"), "must be longer than zero"),
            Ok(_) => {}
            Err(err) => report.error(
                &at.key("due"),
                format!("`{due}` is neither a duration (\"4h\") nor a template rendering to a time (\"{{{{now_plus_4h}}}}\"): {err}"),
            ),
        }
    }
}

fn check_ladder(approval: &ApprovalSpec, at: &Path, report: &mut Report) {
    fn check_notify(specs: &[NotifySpec], at: &Path, report: &mut Report) {
        for (i, n) in specs.iter().enumerate() {
            let p = at.index(i);
            if !NOTIFY_CHANNELS.contains(&n.channel.as_str()) && !n.channel.is_empty() {
                report.error(
                    &p.key("channel"),
                    format!(
                        "unknown channel `{}`: use one of {}",
                        n.channel,
                        NOTIFY_CHANNELS.join(", ")
                    ),
                );
            }
            if n.channel == "email" && n.to.as_deref().is_none_or(|t| t.trim().is_empty()) {
                report.error(
                    &p.key("to"),
                    "an email needs `to`, the address (a template such as \"{{context.manager_email}}\")",
                );
            }
        }
    }
    check_notify(&approval.notify, &at.key("notify"), report);
    check_sla(approval, at, report);
    if let Some(spec) = &approval.decision_form {
        for p in crate::form::check_spec(spec) {
            let mut path = if p.path == "editable" || p.path == "merge_into" {
                at.clone()
            } else {
                at.key("form")
            };
            for part in p.path.split('.').filter(|s| !s.is_empty()) {
                path = path.key(part);
            }
            report.error(&path, p.message);
        }
    }
    let deadline = approval.timeout.map(crate::duration::Duration::as_millis);
    let check_rung = |after: u64, previous: Option<u64>, p: Path, report: &mut Report| {
        if after == 0 {
            report.error(&p, "must be longer than zero");
        } else if previous.is_some_and(|prev| after <= prev) {
            report.error(
                &p,
                "must come after the rung before it (rungs are in order)",
            );
        } else if deadline.is_some_and(|d| after >= d) {
            report.error(
                &p,
                "must come before the approval's `timeout`: a rung at or after the deadline never fires",
            );
        }
    };
    let mut previous = None;
    for (i, r) in approval.reminders.iter().enumerate() {
        check_rung(
            r.as_millis(),
            previous,
            at.key("reminders").index(i),
            report,
        );
        previous = Some(r.as_millis());
    }
    if !approval.reminders.is_empty() && approval.notify.is_empty() {
        report.error(
            &at.key("reminders"),
            "reminders go to the `notify` recipients: add `notify`",
        );
    }
    let mut previous = None;
    for (i, rung) in approval.escalate.iter().enumerate() {
        let p = at.key("escalate").index(i);
        check_rung(rung.after.as_millis(), previous, p.key("after"), report);
        previous = Some(rung.after.as_millis());
        if rung.approvers.roles.is_empty() && rung.approvers.users.is_empty() {
            report.error(
                &p.key("approvers"),
                "an escalation adds approvers: name a role or users",
            );
        }
        check_notify(&rung.notify, &p.key("notify"), report);
    }
}
