//! Templates: sink destinations (file paths, exchanges and routing keys, topics and keys, URLs
//! and header values) rendered from envelope fields with minijinja.
//!
//! Templates are compiled once, when the rules are loaded, so a bad one is a load error and
//! never a surprise at delivery time. Rendering is strict: a template that names a missing
//! field fails that delivery with a clear error, unless it says `| default(...)`.

mod context;

use std::sync::Arc;

use minijinja::{Environment, UndefinedBehavior};

use context::LazyJson;

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct TemplateError(String);

impl TemplateError {
    fn from_minijinja(source: &str, err: &minijinja::Error) -> TemplateError {
        let detail = err
            .detail()
            .map(|detail| format!(": {detail}"))
            .unwrap_or_default();
        TemplateError(format!("template `{source}`: {}{detail}", err.kind()))
    }
}

/// A compiled template. Cheap to clone.
#[derive(Clone)]
pub struct Template {
    source: Arc<str>,
    environment: Arc<Environment<'static>>,
    /// A template without `{{`/`{%` renders to itself; skipping the engine keeps plain paths free.
    is_literal: bool,
}

impl std::fmt::Debug for Template {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Template").field(&self.source).finish()
    }
}

const NAME: &str = "t";

/// A JSON document (an envelope) as the context of one or more renders, read lazily.
pub struct JsonContext(minijinja::Value);

impl JsonContext {
    pub fn new(document: &Arc<str>) -> JsonContext {
        JsonContext(LazyJson::document(Arc::clone(document)))
    }
}

impl Template {
    /// Compiles `source`.
    ///
    /// # Errors
    /// When the source is not a valid template.
    pub fn compile(source: &str) -> Result<Template, TemplateError> {
        let mut environment = Environment::new();
        environment.set_undefined_behavior(UndefinedBehavior::Strict);
        environment.add_filter("date", date);
        environment
            .add_template_owned(NAME, source.to_string())
            .map_err(|err| TemplateError::from_minijinja(source, &err))?;
        Ok(Template {
            source: source.into(),
            environment: Arc::new(environment),
            is_literal: !source.contains("{{") && !source.contains("{%"),
        })
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    /// Renders against a JSON value (an envelope).
    ///
    /// # Errors
    /// When a field the template names is missing and has no default, or a filter fails.
    pub fn render(&self, context: &serde_json::Value) -> Result<String, TemplateError> {
        if self.is_literal {
            return Ok(self.source.to_string());
        }
        self.render_value(minijinja::Value::from_serialize(context))
    }

    /// Renders against a JSON document given as text, parsing only what the template reads.
    ///
    /// # Errors
    /// As `render`.
    pub fn render_json(&self, document: &Arc<str>) -> Result<String, TemplateError> {
        self.render_in(&JsonContext::new(document))
    }

    /// Renders against a context several templates share: what one template read of the
    /// document, the next does not read again.
    ///
    /// # Errors
    /// As `render`.
    pub fn render_in(&self, context: &JsonContext) -> Result<String, TemplateError> {
        if self.is_literal {
            return Ok(self.source.to_string());
        }
        self.render_value(context.0.clone())
    }

    /// Whether the source has no `{{`/`{%` and renders to itself.
    pub fn is_literal(&self) -> bool {
        self.is_literal
    }

    fn render_value(&self, context: minijinja::Value) -> Result<String, TemplateError> {
        let template = self
            .environment
            .get_template(NAME)
            .expect("the template was added at compile time");
        template
            .render(context)
            .map_err(|err| TemplateError::from_minijinja(&self.source, &err))
    }
}

/// `{{ received_at | date }}` → `2024-05-02`; `{{ received_at | date("%Y/%m") }}` → `2024/05`.
/// Takes any RFC 3339 timestamp or civil date-time; the date is the one written, not converted.
fn date(value: String, format: Option<String>) -> Result<String, minijinja::Error> {
    let invalid = || {
        minijinja::Error::new(
            minijinja::ErrorKind::InvalidOperation,
            format!("date filter: `{value}` is not a date or timestamp"),
        )
    };
    let datetime: jiff::civil::DateTime = match value.parse::<jiff::Timestamp>() {
        Ok(timestamp) => timestamp.to_zoned(jiff::tz::TimeZone::UTC).datetime(),
        Err(_) => value
            .parse::<jiff::civil::DateTime>()
            .or_else(|_| {
                value
                    .parse::<jiff::civil::Date>()
                    .map(|date| date.to_datetime(jiff::civil::Time::midnight()))
            })
            .map_err(|_| invalid())?,
    };
    let format = format.as_deref().unwrap_or("%Y-%m-%d");
    Ok(datetime.strftime(format).to_string())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn check(source: &str, context: serde_json::Value, expected: Result<&str, &str>) {
        let rendered = Template::compile(source).and_then(|template| template.render(&context));
        let text: Arc<str> = context.to_string().into();
        let lazily = Template::compile(source).and_then(|template| template.render_json(&text));
        assert_eq!(
            rendered.as_ref().map_err(ToString::to_string),
            lazily.as_ref().map_err(ToString::to_string),
            "{source}: a lazily parsed context renders the same"
        );
        match (rendered, expected) {
            (Ok(text), Ok(want)) => assert_eq!(text, want, "{source}"),
            (Err(err), Err(want)) => assert!(err.to_string().contains(want), "{source}: {err}"),
            (got, want) => panic!("{source}: got {got:?}, want {want:?}"),
        }
    }

    #[test]
    fn renders_fields_and_filters() {
        let envelope = json!({
            "kind": "form",
            "received_at": "2024-05-02T06:14:09.482113Z",
            "domain": "Kenya-MCH",
            "form": {"xmlns": "http://openrosa.org/formdesigner/ABC"},
            "cases": [{"case_type": "household"}],
            "query": {},
        });
        check(
            "out/{{ kind }}/{{ received_at | date }}.jsonl",
            envelope.clone(),
            Ok("out/form/2024-05-02.jsonl"),
        );
        check(
            "{{ received_at | date('%Y/%m') }}",
            envelope.clone(),
            Ok("2024/05"),
        );
        check(
            "{{ domain | lower }}.{{ kind | upper }}",
            envelope.clone(),
            Ok("kenya-mch.FORM"),
        );
        check(
            "{{ cases[0].case_type }}",
            envelope.clone(),
            Ok("household"),
        );
        check(
            "{{ app_id | default('none') }}",
            envelope.clone(),
            Ok("none"),
        );
        check(
            "{{ query.app_id | default('none') }}",
            envelope.clone(),
            Ok("none"),
        );
        check("plain/path.jsonl", envelope.clone(), Ok("plain/path.jsonl"));
        check("{{ form.missing }}", envelope.clone(), Err("undefined"));
        check("{{ kind | date }}", envelope.clone(), Err("not a date"));
        check(
            "{% for case in cases %}{{ case.case_type }}{% endfor %}",
            envelope.clone(),
            Ok("household"),
        );
        check(
            "{{ cases | length }} {{ form | length }}",
            envelope.clone(),
            Ok("1 1"),
        );
        check("{{ form }}", json!({"form": {"a": 1}}), Ok(r#"{"a": 1}"#));
        check("{{ kind ", json!({}), Err("template `{{ kind `"));
    }

    #[test]
    fn a_document_is_read_only_as_far_as_the_template_reads_it() {
        // The bulk after the fields a destination names is never parsed: here it is not even
        // JSON, and rendering the early fields still works.
        let text: Arc<str> =
            r#"{ "kind" : "form", "received_at": "2024-05-02T06:14:09Z", "form": {"data": oops"#
                .into();
        let template = Template::compile("{{ kind }}/{{ received_at | date }}").unwrap();
        assert_eq!(template.render_json(&text).unwrap(), "form/2024-05-02");
        let reading_on = Template::compile("{{ form.data }}").unwrap();
        assert!(reading_on.render_json(&text).is_err());
    }

    #[test]
    fn members_are_found_in_any_order_and_arrays_by_index() {
        let envelope = json!({
            "a": [10, {"b": [1, 2, 3]}, "x"],
            "c": {"d": null, "e": "f"},
        });
        check(
            "{{ c.e }} {{ a[1].b[2] }} {{ a[0] }}",
            envelope.clone(),
            Ok("f 3 10"),
        );
        check(
            "{{ a[2] }} {{ a | length }} {{ c | length }}",
            envelope.clone(),
            Ok("x 3 2"),
        );
        check(
            "{% for k in c %}{{ k }}{% endfor %}",
            envelope.clone(),
            Ok("de"),
        );
        check("{{ a[3] }}", envelope, Err("undefined"));
    }
}
