//! Fuzz the VM supervisor's control protocol (src/vm/control.rs) both ways: arbitrary bytes as
//! a request line (what any local client may send the supervisor) and as an exec session's
//! frame stream (what a supervisor sends back). Neither parser may panic or accept a frame
//! over its bound; a parsed request re-encodes to a line that parses to the same request.
#![no_main]

use husk::vm::control::{
    follow_exec, read_request_line, ControlRequest, ExecFrame, MAX_CONTROL_FRAME,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut requests = data;
    while let Ok(Some(line)) = read_request_line(&mut requests) {
        assert!(line.len() <= MAX_CONTROL_FRAME);
        if let Ok(request) = ControlRequest::parse(&line) {
            let wire = request.encode();
            let again = ControlRequest::parse(&wire[..wire.len() - 1]).expect("re-encoded request");
            assert_eq!(again, request);
        }
    }
    let mut frames = data;
    while let Ok(frame) = ExecFrame::read(&mut frames) {
        match &frame {
            ExecFrame::Stdout(bytes) | ExecFrame::Stderr(bytes) => {
                assert!(bytes.len() <= MAX_CONTROL_FRAME)
            }
            ExecFrame::Error(text) => assert!(text.len() <= 3 * MAX_CONTROL_FRAME),
            ExecFrame::Exit(_) => {}
        }
    }
    let _ = follow_exec(&mut &data[..], &mut std::io::sink(), &mut std::io::sink());
});
