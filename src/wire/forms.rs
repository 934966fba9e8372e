//! Lenient reading and writing of XEP-0004 data forms.
//!
//! Servers differ in the form type they answer with (Prosody `result`,
//! ejabberd `form`; README, "Configuring ejabberd"), so reading only looks at fields
//! by `var` and collects their values; it never refuses a form.

use super::ns;
use super::Attr;
use xmpp_parsers::minidom::Element;

/// All values of the field `var` in `form` (empty when absent).
pub fn values(form: &Element, var: &str) -> Vec<String> {
    form.children()
        .filter(|f| f.name() == "field" && f.attr("var") == Some(var))
        .flat_map(|f| f.children().filter(|v| v.name() == "value"))
        .map(|v| v.text())
        .collect()
}

/// The first value of field `var`.
pub fn value(form: &Element, var: &str) -> Option<String> {
    values(form, var).into_iter().next()
}

/// The first `jabber:x:data` form among `el`'s children.
pub fn find(el: &Element) -> Option<&Element> {
    el.children().find(|c| c.is("x", ns::DATA))
}

/// A form of `kind` (`submit`, `result`) with single- or multi-valued fields.
pub fn build(kind: &str, form_type: Option<&str>, fields: &[(&str, Vec<String>)]) -> Element {
    let mut b = Element::builder("x", ns::DATA).a("type", kind);
    if let Some(ft) = form_type {
        b = b.append(field("FORM_TYPE", &[ft.to_string()], Some("hidden")));
    }
    for (var, vals) in fields {
        b = b.append(field(var, vals, None));
    }
    b.build()
}

fn field(var: &str, vals: &[String], kind: Option<&str>) -> Element {
    let mut b = Element::builder("field", ns::DATA).a("var", var);
    if let Some(k) = kind {
        b = b.a("type", k);
    }
    for v in vals {
        b = b.append(
            Element::builder("value", ns::DATA)
                .append(v.as_str())
                .build(),
        );
    }
    b.build()
}
