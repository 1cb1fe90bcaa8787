//! Fuzzes the config parser: any text must give settings or an error that
//! formats (file:line:column and field), never a panic. A config that parses
//! must compile its entitlement shorthand into a policy set that loads, or
//! the server would accept a config it then refuses to start on.

#![no_main]

use std::path::Path;

use airlock_policy::PolicySet;
use airlock_server::config::Settings;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Settings::parse("fuzz.toml", text, Path::new("/nonexistent/airlock")) {
        Ok(settings) => {
            if let Err(errors) = PolicySet::load(&settings.policy_source.generated) {
                let errors: Vec<String> = errors.iter().map(ToString::to_string).collect();
                panic!("a config that parses compiled to policies that do not load: {errors:?}");
            }
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
});
