//! Outgoing messages, rendered from templates (tinytemplate: `{field}` placeholders), one per
//! kind of answer. The built-in texts can be replaced from a TOML file (`resolved = "…"`).
//! Templates see the case, the unit and the answer's detail — never the resident's name or
//! address, so a rendered message holds nothing personal and can be stored and shown.

use std::collections::BTreeMap;

use serde::Serialize;
use tinytemplate::TinyTemplate;

use crate::replies::Trigger;

/// What a template can use.
#[derive(Debug, Clone, Serialize)]
pub struct Fields {
    /// "cases/{id}".
    pub case: String,
    /// The handling unit.
    pub unit: String,
    /// The result, the referral, the missing papers, or the reason for escalation.
    pub detail: String,
    /// How many reports the reply answers (more than 1 for a cluster).
    pub reports: usize,
}

const BUILT_IN: [(&str, &str); 4] = [
    (
        "resolved",
        "您反映的问题（{case}）已办结：{detail}。{{ if many }}同一问题共 {reports} 位居民反映，一并答复。{{ endif }}请对办理情况进行评价。 \
         Your case {case} is resolved: {detail}. Please rate how it was handled.",
    ),
    (
        "referred",
        "您反映的问题（{case}）不属社区职责，已转交主管部门：{detail}。 \
         Your case {case} is not ours to handle; it was referred: {detail}.",
    ),
    (
        "needs_papers",
        "您反映的问题（{case}）需补充材料：{detail}。材料齐全后继续办理。 \
         Your case {case} needs papers: {detail}. Handling resumes when they arrive.",
    ),
    (
        "escalated",
        "您反映的问题（{case}）已上报审批，审批后 3 个工作日内答复您。 \
         Your case {case} was reported up for approval; you will be answered within 3 working days of the decision.",
    ),
];

#[derive(Serialize)]
struct Context<'a> {
    #[serde(flatten)]
    fields: &'a Fields,
    many: bool,
}

/// The templates in force.
#[derive(Debug, Clone)]
pub struct Templates {
    texts: BTreeMap<String, String>,
}

impl Templates {
    /// The built-in texts, with `overrides` (TOML `kind = "text"`) in place of any of them.
    /// Every template is checked here, so rendering cannot fail later.
    pub fn new(overrides: Option<&str>) -> Result<Self, String> {
        let mut texts: BTreeMap<String, String> = BUILT_IN
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        if let Some(text) = overrides {
            let given: BTreeMap<String, String> =
                toml::from_str(text).map_err(|e| format!("reply templates: {e}"))?;
            for (k, v) in given {
                if !texts.contains_key(&k) {
                    return Err(format!("reply templates: unknown template {k:?}"));
                }
                texts.insert(k, v);
            }
        }
        let t = Self { texts };
        let probe = Fields {
            case: "cases/x".into(),
            unit: "units/x".into(),
            detail: "x".into(),
            reports: 2,
        };
        for trigger in [
            Trigger::Resolved,
            Trigger::Referred,
            Trigger::NeedsPapers,
            Trigger::Escalated,
        ] {
            t.try_render(trigger, &probe)
                .map_err(|e| format!("reply template {}: {e}", trigger.slug()))?;
        }
        Ok(t)
    }

    fn try_render(&self, trigger: Trigger, fields: &Fields) -> Result<String, String> {
        let mut tt = TinyTemplate::new();
        tt.set_default_formatter(&tinytemplate::format_unescaped);
        let text = self
            .texts
            .get(trigger.slug())
            .ok_or_else(|| "missing".to_string())?;
        tt.add_template(trigger.slug(), text)
            .map_err(|e| e.to_string())?;
        let ctx = Context {
            fields,
            many: fields.reports > 1,
        };
        tt.render(trigger.slug(), &ctx).map_err(|e| e.to_string())
    }

    /// The message for an answer. Templates were checked at start; should one still fail,
    /// the plain detail goes out rather than nothing.
    pub fn render(&self, trigger: Trigger, fields: &Fields) -> String {
        self.try_render(trigger, fields)
            .unwrap_or_else(|_| format!("{}: {}", fields.case, fields.detail))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(reports: usize) -> Fields {
        Fields {
            case: "cases/c1".into(),
            unit: "units/u1".into(),
            detail: "路灯已修好".into(),
            reports,
        }
    }

    #[test]
    fn built_in_templates_render_and_mention_clusters() {
        let t = Templates::new(None).unwrap();
        let one = t.render(Trigger::Resolved, &fields(1));
        assert!(
            one.contains("cases/c1") && one.contains("路灯已修好"),
            "{one}"
        );
        assert!(!one.contains("一并答复"));
        let many = t.render(Trigger::Resolved, &fields(3));
        assert!(many.contains("共 3 位居民"), "{many}");
    }

    #[test]
    fn overrides_replace_and_bad_ones_are_refused() {
        let t = Templates::new(Some("referred = \"Referred: {detail}\"")).unwrap();
        assert_eq!(
            t.render(Trigger::Referred, &fields(1)),
            "Referred: 路灯已修好"
        );
        assert!(Templates::new(Some("nope = \"x\"")).is_err());
        assert!(Templates::new(Some("resolved = \"{ unclosed\"")).is_err());
    }
}
