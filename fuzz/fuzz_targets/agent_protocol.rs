//! Fuzz the host<->agent protocol decoder: arbitrary bytes, fed in chunk sizes chosen by the
//! input itself, through the incremental decoder and the blocking reader, and every decoded
//! frame through the message parsers and validators both peers use.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rootfs_agent::protocol::{
    read_frame, Decoder, ErrorReport, ExitStatus, FrameKind, ProcessSpec, ReadyInfo, ResizeRequest,
    SignalRequest, StartRequest, Started, MAX_PAYLOAD,
};

fuzz_target!(|data: &[u8]| {
    let Some((&chunk, stream)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(chunk).max(1);
    let mut decoder = Decoder::new();
    let mut rest = stream;
    'feed: while !rest.is_empty() {
        let piece = &rest[..chunk.min(rest.len())];
        let mut offset = 0;
        while offset < piece.len() {
            match decoder.decode(&piece[offset..]) {
                Ok((used, frame)) => {
                    assert!(used > 0 && offset + used <= piece.len());
                    offset += used;
                    if let Some(frame) = frame {
                        assert!(frame.payload.len() <= MAX_PAYLOAD.min(frame.kind.max_payload()));
                        let _ = frame.parse_json::<ReadyInfo>(FrameKind::Ready);
                        let _ = frame
                            .parse_json::<StartRequest>(FrameKind::Start)
                            .map(|s| s.validate());
                        let _ = frame
                            .parse_json::<ProcessSpec>(FrameKind::Exec)
                            .map(|s| s.validate());
                        let _ = frame.parse_json::<Started>(FrameKind::Started);
                        let _ = frame.parse_json::<SignalRequest>(FrameKind::Signal);
                        let _ = frame.parse_json::<ResizeRequest>(FrameKind::Resize);
                        let _ = frame.parse_json::<ExitStatus>(FrameKind::Exit);
                        let _ = frame.parse_json::<ErrorReport>(FrameKind::Error);
                        let _ = frame.credit_value();
                        // Re-encoding a decoded frame gives back exactly its wire bytes.
                        let wire = frame.encode();
                        let mut again = Decoder::new();
                        let (n, copy) = again.decode(&wire).expect("re-encoded frame decodes");
                        assert_eq!((n, copy.as_ref()), (wire.len(), Some(&frame)));
                    }
                }
                Err(_) => {
                    assert!(decoder.decode(b"HUSK").is_err(), "decoder must stay failed");
                    break 'feed;
                }
            }
        }
        rest = &rest[piece.len()..];
    }
    let mut cursor = std::io::Cursor::new(stream);
    while let Ok(Some(_)) = read_frame(&mut cursor) {}
});
