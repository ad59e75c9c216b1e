//! Call recordings: a real WAV file (PCM, 8 kHz, mono, 16-bit: what MixMonitor writes for a
//! telephone call) holding a tone, named the way FreePBX names outbound recordings, written under
//! a temporary name and renamed so a reader never sees half a file.

use std::path::{Path, PathBuf};
use std::time::Duration;

use time::OffsetDateTime;

const SAMPLE_RATE: u32 = 8_000;
/// Never write more than this much audio, however long the call talked.
const MAX_AUDIO: Duration = Duration::from_secs(60);
/// The tone of the reference dialplan's `PlayTones(440/300,0/300)`.
const TONE_HZ: f64 = 440.0;
const CADENCE_MS: u64 = 300;

/// A WAV file of `duration` of a 440 Hz tone, 300 ms on and 300 ms off.
pub(crate) fn tone(duration: Duration) -> Vec<u8> {
    let samples = (duration.min(MAX_AUDIO).as_millis() as u64 * u64::from(SAMPLE_RATE) / 1000) as u32;
    let data_len = samples * 2;
    let mut wav = Vec::with_capacity(44 + data_len as usize);
    wav.extend_from_slice(b"RIFF");
    wav.extend_from_slice(&(36 + data_len).to_le_bytes());
    wav.extend_from_slice(b"WAVE");
    wav.extend_from_slice(b"fmt ");
    wav.extend_from_slice(&16u32.to_le_bytes()); // fmt chunk size
    wav.extend_from_slice(&1u16.to_le_bytes()); // PCM
    wav.extend_from_slice(&1u16.to_le_bytes()); // mono
    wav.extend_from_slice(&SAMPLE_RATE.to_le_bytes());
    wav.extend_from_slice(&(SAMPLE_RATE * 2).to_le_bytes()); // byte rate
    wav.extend_from_slice(&2u16.to_le_bytes()); // block align
    wav.extend_from_slice(&16u16.to_le_bytes()); // bits per sample
    wav.extend_from_slice(b"data");
    wav.extend_from_slice(&data_len.to_le_bytes());
    let samples_per_beat = SAMPLE_RATE as u64 * CADENCE_MS / 1000;
    for n in 0..u64::from(samples) {
        let on = (n / samples_per_beat).is_multiple_of(2);
        let value = if on {
            (8_000.0 * (2.0 * std::f64::consts::PI * TONE_HZ * n as f64 / f64::from(SAMPLE_RATE)).sin()) as i16
        } else {
            0
        };
        wav.extend_from_slice(&value.to_le_bytes());
    }
    wav
}

/// `out-<exten>-<src>-<YYYYMMDD>-<HHMMSS>-<uniqueid>.wav`. Parts come from the client (the
/// ChannelId, the numbers), so anything but `[A-Za-z0-9+._-]` becomes `_`: no path can escape
/// the recordings directory.
pub(crate) fn file_name(exten: &str, source: &str, started: OffsetDateTime, uniqueid: &str) -> String {
    let format = time::macros::format_description!("[year][month][day]-[hour][minute][second]");
    let stamp = started.format(&format).unwrap_or_default();
    format!("out-{}-{}-{stamp}-{}.wav", safe(exten), safe(source), safe(uniqueid))
}

/// A file name a dialplan's MixMonitor gave (its variables expanded), kept inside the recordings
/// directory: anything but `[A-Za-z0-9+._-]` becomes `_`.
pub(crate) fn dialplan_file_name(name: &str) -> String {
    safe(name)
}

fn safe(part: &str) -> String {
    let cleaned: String =
        part.chars().map(|c| if c.is_ascii_alphanumeric() || "+._-".contains(c) { c } else { '_' }).collect();
    match cleaned.trim_start_matches('.') {
        "" => "_".into(),
        rest => rest.into(),
    }
}

/// Writes `bytes` as `dir/name` via a hidden temporary file and a rename.
pub(crate) async fn write_atomically(dir: &Path, name: &str, bytes: Vec<u8>) -> std::io::Result<PathBuf> {
    tokio::fs::create_dir_all(dir).await?;
    let temporary = dir.join(format!(".{name}.part"));
    let target = dir.join(name);
    tokio::fs::write(&temporary, bytes).await?;
    tokio::fs::rename(&temporary, &target).await?;
    Ok(target)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tone_is_a_valid_pcm_wav() {
        let wav = tone(Duration::from_millis(500));
        assert_eq!(&wav[0..4], b"RIFF");
        assert_eq!(u32::from_le_bytes(wav[4..8].try_into().unwrap()) as usize, wav.len() - 8);
        assert_eq!(&wav[8..16], b"WAVEfmt ");
        assert_eq!(u32::from_le_bytes(wav[24..28].try_into().unwrap()), 8_000);
        assert_eq!(u32::from_le_bytes(wav[40..44].try_into().unwrap()), 8_000);
        assert_eq!(wav.len(), 44 + 8_000);
    }

    #[test]
    fn file_names_follow_freepbx_and_cannot_escape_the_directory() {
        let at = time::macros::datetime!(2026-11-22 08:13:48 UTC);
        assert_eq!(
            file_name("79161234567", "74950000000", at, "1795335228.6"),
            "out-79161234567-74950000000-20261122-081348-1795335228.6.wav"
        );
        assert_eq!(file_name("1", "2", at, "../../etc/passwd"), "out-1-2-20261122-081348-_.._etc_passwd.wav");
        assert_eq!(file_name("", "<unknown>", at, ".."), "out-_-_unknown_-20261122-081348-_.wav");
    }
}
