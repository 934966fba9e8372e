//! XEP-0133 administration as a server admin, for the tests' view of the
//! truth: what the server itself says about its sessions. Built on the
//! product's XEP-0050 payloads (`wire::adhoc`); the results are read here
//! with plain data-form access, so a test compares the component against
//! the server's own words.

use pubpresence::minidom::Element;
use pubpresence::wire::{adhoc, forms, ns, Attr};
use pubpresence::xmpp::c2s::C2s;
use std::time::Duration;

const IQ_TIMEOUT: Duration = Duration::from_secs(10);

/// Executes the ad-hoc command `node` at `to`, submits `fields` in its
/// admin form and returns the final `<command/>`. An error names the step
/// and carries the server's answer.
pub async fn run_command(
    admin: &C2s,
    to: &str,
    node: &str,
    fields: &[(&str, &str)],
) -> Result<Element, String> {
    let first = admin
        .iq(set(to, adhoc::execute(node)), IQ_TIMEOUT)
        .await
        .map_err(|e| format!("execute {node} at {to}: {e}"))?;
    let session = adhoc::reply(&first)
        .and_then(|r| r.sessionid)
        .ok_or_else(|| format!("{node}: no session id in {}", String::from(&first)))?
        .to_string();
    let fields: Vec<(&str, Vec<String>)> = fields
        .iter()
        .map(|(var, value)| (*var, vec![value.to_string()]))
        .collect();
    let done = admin
        .iq(
            set(to, adhoc::submit(node, Some(&session), &fields)),
            IQ_TIMEOUT,
        )
        .await
        .map_err(|e| format!("submit {node} at {to}: {e}"))?;
    let command = done
        .get_child("command", ns::COMMANDS)
        .ok_or_else(|| format!("{node}: no command in {}", String::from(&done)))?
        .clone();
    if let Some(note) = command
        .children()
        .find(|c| c.name() == "note" && c.attr("type") == Some("error"))
    {
        return Err(format!("{node} failed: {}", note.text()));
    }
    Ok(command)
}

/// The non-empty values of field `var` in the form inside `command`.
pub fn values(command: &Element, var: &str) -> Vec<String> {
    forms::find(command)
        .map(|f| forms::values(f, var))
        .unwrap_or_default()
        .into_iter()
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
        .collect()
}

fn set(to: &str, payload: Element) -> Element {
    Element::builder("iq", ns::CLIENT)
        .a("type", "set")
        .a("to", to)
        .append(payload)
        .build()
}
