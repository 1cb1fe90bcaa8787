//! Loading reports every problem with the file, line and column an author
//! needs, and accepts what it should.

use airlock_policy::{PolicyError, PolicySet};

fn load(files: &[(&str, &str)]) -> Result<PolicySet, Vec<PolicyError>> {
    let sources: Vec<(String, String)> = files
        .iter()
        .map(|(f, t)| ((*f).to_owned(), (*t).to_owned()))
        .collect();
    PolicySet::load(&sources)
}

fn errors(files: &[(&str, &str)]) -> Vec<String> {
    match load(files) {
        Ok(_) => Vec::new(),
        Err(errors) => errors.iter().map(ToString::to_string).collect(),
    }
}

const REQUEST_ALL: &str = r#"permit(principal, action == Airlock::Action::"request", resource);"#;

#[test]
fn syntax_and_schema_errors_name_file_line_and_column() {
    let syntax = "permit(principal, action, resource);\n\npermit(principal, action resource);\n";
    let schema = concat!(
        "// the attribute is `team`\n",
        "permit(principal, action == Airlock::Action::\"request\", resource)\n",
        "when { context.has_ticket && principal.tem == \"x\" };\n",
    );
    let got = errors(&[("syntax.cedar", syntax), ("schema.cedar", schema)]);
    assert_eq!(got.len(), 2, "{got:#?}");
    assert!(
        got[0].starts_with("syntax.cedar:3:26: unexpected token `resource`"),
        "{got:#?}"
    );
    // Column 30 is where `principal.tem` starts.
    assert!(got[1].starts_with("schema.cedar:3:30: "), "{got:#?}");
    assert!(got[1].contains("attribute `tem`"), "{got:#?}");
    assert!(got[1].contains("schema.cedar#1"), "{got:#?}");
}

#[test]
fn a_type_error_points_into_the_right_file_among_several() {
    let fine = format!("{REQUEST_ALL}\n{REQUEST_ALL}\n");
    let wrong = "\n\n  permit(principal, action == Airlock::Action::\"approve\", resource)\n  when { context.requester.on_call > 1 };\n";
    let got = errors(&[("fine.cedar", &fine), ("wrong.cedar", wrong)]);
    assert_eq!(got.len(), 1, "{got:#?}");
    assert!(got[0].starts_with("wrong.cedar:4:"), "{got:#?}");
}

#[test]
fn every_problem_is_reported_at_once_in_file_order() {
    let a = concat!(
        "@id(\"same\") permit(principal, action == Airlock::Action::\"request\", resource);\n",
        "@approvals(\"2\")\n",
        "permit(principal, action == Airlock::Action::\"request\", resource);\n",
    );
    let b = concat!(
        "@id(\"same\") permit(principal, action == Airlock::Action::\"request\", resource);\n",
        "@approvals(\"0\") @approvers(\"security\")\n",
        "permit(principal, action == Airlock::Action::\"require_approval\", resource);\n",
        "@approvals(\"1\") @approvers(\"security, not a group\")\n",
        "permit(principal, action == Airlock::Action::\"require_approval\", resource);\n",
        "// action unconstrained includes require_approval\n",
        "permit(principal, action, resource);\n",
        "permit(principal == ?principal, action, resource);\n",
        "@id(\"\") forbid(principal, action, resource);\n",
    );
    let got = errors(&[("a.cedar", a), ("b.cedar", b)]);
    let expected = [
        "a.cedar:2:1: policy `a.cedar#2`: `@approvals` and `@approvers` only apply to a `permit` for `Airlock::Action::\"require_approval\"` or `Airlock::Action::\"extend\"`",
        "b.cedar:1:1: policy id `same` is already used at a.cedar:1:1",
        "b.cedar:2:1: policy `b.cedar#2`: `@approvals` must be at least 1",
        "b.cedar:4:17: policy `b.cedar#3`: `@approvers` lists group `not a group`",
        "b.cedar:7:1: policy `b.cedar#4`: a `require_approval` permit needs `@approvals(\"N\")` and `@approvers(\"group,...\")`",
        "b.cedar:8:1: templates",
        "b.cedar:9:1: `@id` must not be empty",
    ];
    assert_eq!(got.len(), expected.len(), "{got:#?}");
    for (got, want) in got.iter().zip(expected) {
        assert!(got.starts_with(want), "got {got}\nwant {want}…");
    }
}

#[test]
fn waiting_time_annotations_are_checked_where_they_stand() {
    let route = |annotations: &str| {
        format!(
            "@approvals(\"1\") @approvers(\"sre\") {annotations}\npermit(principal, action == Airlock::Action::\"require_approval\", resource);\n"
        )
    };
    let text = [
        route("@remind_after(\"15\")"),
        route("@pending_timeout(\"0s\")"),
        route("@escalate_after(\"1h\")"),
        route("@escalate_to(\"security\")"),
        route("@escalate_after(\"1h\") @escalate_to(\"security, not a group\")"),
        "@remind_after(\"10m\")\npermit(principal, action == Airlock::Action::\"request\", resource);\n"
            .to_owned(),
        route("@remind_after(\"10m\") @escalate_after(\"1h\") @escalate_to(\"security,leads\") @pending_timeout(\"8h\")"),
    ]
    .concat();
    let got = errors(&[("w.cedar", &text)]);
    let expected = [
        "w.cedar:1:35: policy `w.cedar#1`: `@remind_after`: `15` has no unit",
        "w.cedar:3:35: policy `w.cedar#2`: `@pending_timeout` must be more than 0s",
        "w.cedar:5:35: policy `w.cedar#3`: `@escalate_after` needs `@escalate_to",
        "w.cedar:7:35: policy `w.cedar#4`: `@escalate_to` needs `@escalate_after",
        "w.cedar:9:57: policy `w.cedar#5`: `@escalate_to` lists group `not a group`",
        "w.cedar:11:1: policy `w.cedar#6`: `@remind_after` only applies to a `permit` for `Airlock::Action::\"require_approval\"`",
    ];
    assert_eq!(got.len(), expected.len(), "{got:#?}");
    for (got, want) in got.iter().zip(expected) {
        assert!(got.starts_with(want), "got {got}\nwant {want}…");
    }
}

#[test]
fn ids_come_from_annotations_or_file_position() {
    let text = format!("{REQUEST_ALL}\n@id(\"named\")\n{REQUEST_ALL}\n// third\n{REQUEST_ALL}\n");
    let set = load(&[("p.cedar", &text)]).unwrap();
    let ids: Vec<&str> = set.policy_ids().collect();
    assert_eq!(ids, ["named", "p.cedar#1", "p.cedar#3"]);
    assert_eq!(set.location("named"), Some(("p.cedar", 2, 1)));
    assert_eq!(set.location("p.cedar#3"), Some(("p.cedar", 5, 1)));
}

#[test]
fn a_file_given_twice_is_an_error() {
    let got = errors(&[("p.cedar", REQUEST_ALL), ("p.cedar", REQUEST_ALL)]);
    assert_eq!(got, ["p.cedar:1:1: file `p.cedar` is given twice"]);
}

#[test]
fn version_names_the_exact_text() {
    let one = load(&[("p.cedar", REQUEST_ALL)]).unwrap();
    let same = load(&[("p.cedar", REQUEST_ALL)]).unwrap();
    let other = load(&[("p.cedar", &format!("{REQUEST_ALL}\n"))]).unwrap();
    let renamed = load(&[("q.cedar", REQUEST_ALL)]).unwrap();
    assert_eq!(one.version(), same.version());
    assert_ne!(one.version(), other.version());
    assert_ne!(one.version(), renamed.version());
}

#[test]
fn an_empty_set_loads_and_denies_everything() {
    let set = load(&[]).unwrap();
    assert_eq!(set.policy_ids().count(), 0);
}

#[test]
fn impossible_policies_are_warnings_not_errors() {
    let text = r#"permit(principal, action == Airlock::Action::"request", resource) when { 1 == 2 && context.has_ticket && false };"#;
    let set = load(&[("w.cedar", text)]).unwrap();
    assert_eq!(set.warnings().len(), 1, "{:?}", set.warnings());
    assert!(set.warnings()[0].to_string().starts_with("w.cedar:1:"));
}

#[test]
fn mfa_max_age_is_whole_seconds_on_a_forbid() {
    let forbid = |age: &str| {
        format!(
            "{REQUEST_ALL}\n@id(\"mfa\") @mfa_max_age(\"{age}\")\nforbid(principal, action == Airlock::Action::\"request\", resource) unless {{ context.mfa_age_seconds >= 0 && context.mfa_age_seconds <= 60 }};\n"
        )
    };
    assert!(errors(&[("p.cedar", &forbid("60"))]).is_empty());
    let bad = errors(&[("p.cedar", &forbid("1m"))]);
    assert!(
        bad.len() == 1
            && bad[0].contains("`@mfa_max_age` must be a whole number of seconds, not `1m`"),
        "{bad:?}"
    );
    let on_permit = format!("@id(\"p\") @mfa_max_age(\"60\")\n{REQUEST_ALL}\n");
    let bad = errors(&[("p.cedar", &on_permit)]);
    assert!(
        bad.len() == 1 && bad[0].contains("`@mfa_max_age` only applies to a `forbid`"),
        "{bad:?}"
    );
}

#[test]
fn a_reason_annotation_must_be_one_line_of_text() {
    let ok = r#"@id("p") @reason("engineers, with a ticket") permit(principal, action == Airlock::Action::"request", resource);"#;
    assert!(errors(&[("ok.cedar", ok)]).is_empty());
    let empty = r#"@id("p") @reason("  ") permit(principal, action == Airlock::Action::"request", resource);"#;
    let got = errors(&[("empty.cedar", empty)]);
    assert_eq!(
        got,
        vec!["empty.cedar:1:10: policy `p`: `@reason` must not be empty".to_owned()]
    );
    let two_lines = "@id(\"p\") @reason(\"one\ntwo\") permit(principal, action == Airlock::Action::\"request\", resource);";
    let got = errors(&[("lines.cedar", two_lines)]);
    assert_eq!(got.len(), 1, "{got:#?}");
    assert!(
        got[0].starts_with("lines.cedar:1:10: policy `p`: `@reason`: "),
        "{got:#?}"
    );
}

#[test]
fn an_extend_permit_may_carry_a_tier_but_not_half_of_one() {
    let ok = concat!(
        "permit(principal, action == Airlock::Action::\"extend\", resource);\n",
        "@approvals(\"1\") @approvers(\"dba\")\n",
        "permit(principal, action == Airlock::Action::\"extend\", resource)\n",
        "when { context.total_seconds > 7200 && context.extension_seconds > 0 };\n",
    );
    assert_eq!(errors(&[("ok.cedar", ok)]), Vec::<String>::new());
    let half = concat!(
        "@approvals(\"1\")\n",
        "permit(principal, action == Airlock::Action::\"extend\", resource);\n",
    );
    let got = errors(&[("half.cedar", half)]);
    assert_eq!(got.len(), 1, "{got:#?}");
    assert!(
        got[0].starts_with("half.cedar:2:1: policy `half.cedar#1`: an `extend` permit that needs approvals needs `@approvals(\"N\")` and `@approvers("),
        "{got:#?}"
    );
    // The extension's context is not the request's.
    let wrong = "permit(principal, action == Airlock::Action::\"request\", resource) when { context.total_seconds > 0 };\n";
    assert_eq!(errors(&[("wrong.cedar", wrong)]).len(), 1);
}
