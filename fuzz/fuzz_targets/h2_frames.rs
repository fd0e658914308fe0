#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| smh_gateway::fuzzing::h2_frames(data));
