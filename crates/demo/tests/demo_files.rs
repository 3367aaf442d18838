//! The demo's two configuration files must agree: every number careline.toml sends from is
//! registered in wa-sandbox, every template translation it names is approved there with the
//! same number of body parameters and buttons.

use careline_domain::facility::NetworkConfig;
use wa_sandbox::{Registry, RegistryFile};

const CARELINE: &str = include_str!("../../../deploy/demo/careline.toml");
const SANDBOX: &str = include_str!("../../../deploy/demo/sandbox-templates.toml");

fn registry() -> Registry {
    let file: RegistryFile = toml::from_str(SANDBOX).expect("sandbox-templates.toml parses");
    let mut registry = Registry::default();
    registry.register_file(file).expect("sandbox-templates.toml registers");
    registry
}

#[test]
fn the_demo_network_configuration_is_valid() {
    let config = NetworkConfig::from_toml(CARELINE).unwrap();
    let ids: Vec<&str> = config.facilities.iter().map(|f| f.id.as_str()).collect();
    assert_eq!(ids, ["city-general", "lakeside-clinic"]);
    assert_ne!(config.facilities[0].time_zone, config.facilities[1].time_zone);
    assert_ne!(config.facilities[0].phone_number_id, config.facilities[1].phone_number_id);
}

#[test]
fn every_facility_number_is_registered_in_the_sandbox_with_its_throughput() {
    let config = NetworkConfig::from_toml(CARELINE).unwrap();
    let registry = registry();
    for facility in &config.facilities {
        let number =
            registry.number(&facility.phone_number_id).unwrap_or_else(|| panic!("{} unregistered", facility.id));
        assert_eq!(number.mps, Some(facility.throughput_mps), "{}", facility.id);
    }
}

#[test]
fn every_template_translation_the_fleet_may_send_is_approved_in_the_sandbox() {
    let config = NetworkConfig::from_toml(CARELINE).unwrap();
    let registry = registry();
    for facility in &config.facilities {
        for kind in facility.job_kinds() {
            let spec = config.template_for(facility, &kind).unwrap();
            for code in spec.languages.values() {
                let approved = registry
                    .template(&spec.name, code)
                    .unwrap_or_else(|e| panic!("{} {code} not sendable: {e:?}", spec.name));
                assert_eq!(approved.body_params, spec.body.len(), "{} {code}", spec.name);
                assert_eq!(approved.button_titles().len(), spec.buttons.len(), "{} {code}", spec.name);
            }
        }
    }
}
