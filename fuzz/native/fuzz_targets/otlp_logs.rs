//! libFuzzer target: the native decoder's parsing (`native/src/otlp.rs`) and content hash
//! (`native/src/content_hash.rs`) on arbitrary bytes, compiled from the extension's own
//! sources with coverage instrumentation (which the Python harness cannot give the
//! extension). No input may panic, overflow or exhaust the stack; a request that decodes,
//! encoded again, must decode to the same request.

#![no_main]

use libfuzzer_sys::fuzz_target;
use prost::bytes::Bytes;
use prost::Message;

#[allow(dead_code)]
#[path = "../../../native/src/otlp.rs"]
mod otlp;

#[allow(dead_code)]
#[path = "../../../native/src/content_hash.rs"]
mod content_hash;

use otlp::ExportLogsServiceRequest;

fuzz_target!(|data: &[u8]| {
    let Ok(request) = otlp::decode::<ExportLogsServiceRequest>(Bytes::copy_from_slice(data))
    else {
        return;
    };
    let mut scratch = Vec::new();
    for rl in &request.resource_logs {
        let resource = match &rl.resource {
            Some(resource) => content_hash::attributes(&resource.attributes),
            None => Ok(b"{}".to_vec()),
        };
        for sl in &rl.scope_logs {
            let shared = content_hash::Shared {
                resource: &resource,
                scope_name: sl.scope.as_ref().map_or(&[], |scope| &scope.name[..]),
                scope_version: sl.scope.as_ref().map_or(&[], |scope| &scope.version[..]),
            };
            for lr in &sl.log_records {
                let _ = content_hash::record_hash(&mut scratch, lr, &shared, "", "");
            }
        }
    }
    // What was kept, written canonically, reads back as the same request.
    let encoded = request.encode_to_vec();
    let again = otlp::decode::<ExportLogsServiceRequest>(Bytes::from(encoded.clone()))
        .expect("a decoded request, encoded again, decodes");
    assert_eq!(again.encode_to_vec(), encoded, "re-encoding is not stable");
});
