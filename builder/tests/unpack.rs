//! Crafted archives against `builder::unpack`: each way out of the build folder, each special
//! entry and each cap is refused with the entry named, nothing lands outside, and the build
//! folder is removed. Archives are built byte by byte where the `tar` crate's own checks would
//! refuse to write them.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use builder::{unpack, Limits, UnpackError};
use tar::EntryType;

struct Sandbox {
    _dir: tempfile::TempDir,
    root: PathBuf,
}

impl Sandbox {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let root = dir.path().to_path_buf();
        fs::create_dir_all(root.join("outside")).expect("outside");
        fs::write(root.join("outside/sentinel"), "untouched").expect("sentinel");
        Self { _dir: dir, root }
    }

    fn archive(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let path = self.root.join(name);
        fs::write(&path, bytes).expect("write archive");
        path
    }

    /// The build folder sits two levels below the sandbox, so `../../outside` reaches it.
    fn dest(&self) -> PathBuf {
        self.root.join("builds/one")
    }

    /// Nothing but the sentinel is outside, and the failed build folder is gone.
    fn assert_untouched(&self) {
        let outside: Vec<_> = fs::read_dir(self.root.join("outside"))
            .expect("outside")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(outside, vec!["sentinel"]);
        assert_eq!(
            fs::read_to_string(self.root.join("outside/sentinel")).expect("sentinel"),
            "untouched"
        );
        assert!(
            !self.dest().exists(),
            "the failed build folder was left behind"
        );
        let top: Vec<_> = fs::read_dir(&self.root)
            .expect("root")
            .map(|e| e.expect("entry").file_name().into_string().expect("utf-8"))
            .filter(|n| !n.ends_with(".tar") && !n.ends_with(".tgz") && !n.ends_with(".zip"))
            .collect();
        let mut top = top;
        top.sort();
        assert_eq!(top, vec!["builds", "outside"]);
    }
}

/// A tar entry with any name and link name, as a hostile client could send it.
fn raw_entry(
    builder: &mut tar::Builder<Vec<u8>>,
    name: &str,
    kind: EntryType,
    link: &str,
    data: &[u8],
) {
    let mut header = tar::Header::new_gnu();
    {
        let gnu = header.as_gnu_mut().expect("gnu header");
        gnu.name[..name.len()].copy_from_slice(name.as_bytes());
        gnu.linkname[..link.len()].copy_from_slice(link.as_bytes());
    }
    header.set_entry_type(kind);
    header.set_size(data.len() as u64);
    header.set_mode(if kind == EntryType::Directory {
        0o755
    } else {
        0o644
    });
    header.set_cksum();
    builder.append(&header, data).expect("append");
}

fn tar_of(entries: &[(&str, EntryType, &str, &[u8])]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for (name, kind, link, data) in entries {
        raw_entry(&mut builder, name, *kind, link, data);
    }
    builder.into_inner().expect("tar")
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(bytes).expect("gzip");
    encoder.finish().expect("gzip")
}

fn refused_entry(error: UnpackError) -> (String, String) {
    match error {
        UnpackError::Refused { entry, reason } => (entry, reason),
        other => panic!("expected a refusal, got: {other}"),
    }
}

/// Unpacks a hostile tar.gz and checks the refusal names `entry` and says `because`.
fn assert_refused(entries: &[(&str, EntryType, &str, &[u8])], entry: &str, because: &str) {
    let sandbox = Sandbox::new();
    let archive = sandbox.archive("code.tgz", &gzip(&tar_of(entries)));
    let error = unpack(&archive, &sandbox.dest(), Limits::default()).expect_err("accepted");
    let text = error.to_string();
    let (named, reason) = refused_entry(error);
    assert_eq!(named, entry, "{text}");
    assert!(reason.contains(because), "{text}");
    sandbox.assert_untouched();
}

const FILE: EntryType = EntryType::Regular;

#[test]
fn a_good_archive_unpacks_whole() {
    let sandbox = Sandbox::new();
    let mut builder = tar::Builder::new(Vec::new());
    // `tar czf code.tgz -C dir .` begins with the folder itself.
    raw_entry(&mut builder, "./", EntryType::Directory, "", b"");
    raw_entry(&mut builder, "./app/", EntryType::Directory, "", b"");
    raw_entry(
        &mut builder,
        "./app/main.py",
        FILE,
        "",
        b"def start(args):\n    return 1\n",
    );
    let mut run = tar::Header::new_gnu();
    run.set_path("app/run.sh").expect("path");
    run.set_size(3);
    run.set_mode(0o755);
    run.set_cksum();
    builder.append(&run, &b"ls\n"[..]).expect("append");
    raw_entry(&mut builder, "app/lib/util.py", FILE, "", b"X = 2\n");
    raw_entry(
        &mut builder,
        "app/util.py",
        EntryType::Symlink,
        "lib/util.py",
        b"",
    );
    raw_entry(
        &mut builder,
        "app/copy.py",
        EntryType::Link,
        "app/main.py",
        b"",
    );
    let archive = sandbox.archive("code.tgz", &gzip(&builder.into_inner().expect("tar")));

    let unpacked = unpack(&archive, &sandbox.dest(), Limits::default()).expect("unpacks");
    assert_eq!(unpacked.entries, 7);
    let dest = sandbox.dest();
    assert_eq!(
        fs::read_to_string(dest.join("app/util.py")).expect("through the link"),
        "X = 2\n"
    );
    assert_eq!(
        fs::read(dest.join("app/copy.py")).expect("hard link copy"),
        fs::read(dest.join("app/main.py")).expect("main")
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &str| {
        fs::metadata(dest.join(p))
            .expect("meta")
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode("app/run.sh"), 0o755);
    assert_eq!(mode("app/main.py"), 0o644);
}

#[test]
fn names_that_leave_the_folder_are_refused() {
    assert_refused(
        &[("../../outside/evil", FILE, "", b"x")],
        "../../outside/evil",
        "`..`",
    );
    assert_refused(&[("app/../../x", FILE, "", b"x")], "app/../../x", "`..`");
    let absolute = format!("{}/evil", std::env::temp_dir().display());
    assert_refused(&[(&absolute, FILE, "", b"x")], &absolute, "absolute");
}

#[test]
fn links_that_leave_the_folder_are_refused() {
    assert_refused(
        &[("up", EntryType::Symlink, "../../outside", b"")],
        "up",
        "outside the build folder",
    );
    assert_refused(
        &[("etc", EntryType::Symlink, "/etc", b"")],
        "etc",
        "absolute path",
    );
    // Each link is inside when read alone; together they lead out.
    assert_refused(
        &[
            ("d/e", EntryType::Symlink, "..", b""),
            ("x", EntryType::Symlink, "d/e/../../outside", b""),
        ],
        "x",
        "leads outside",
    );
    assert_refused(
        &[("passwd", EntryType::Link, "../../outside/sentinel", b"")],
        "passwd",
        "`..`",
    );
    assert_refused(
        &[("shadow", EntryType::Link, "/etc/shadow", b"")],
        "shadow",
        "absolute",
    );
}

#[test]
fn a_file_written_through_a_link_is_refused() {
    // `l -> sub` is harmless alone; the file `l/x` must not be written through it.
    let sandbox = Sandbox::new();
    let entries: &[(&str, EntryType, &str, &[u8])] = &[
        ("l", EntryType::Symlink, "../../outside", b""),
        ("l/evil", FILE, "", b"x"),
    ];
    let archive = sandbox.archive("code.tgz", &gzip(&tar_of(entries)));
    assert!(unpack(&archive, &sandbox.dest(), Limits::default()).is_err());
    sandbox.assert_untouched();

    let sandbox = Sandbox::new();
    let entries: &[(&str, EntryType, &str, &[u8])] = &[
        ("sub/", EntryType::Directory, "", b""),
        ("l", EntryType::Symlink, "sub", b""),
        ("l/x", FILE, "", b"x"),
    ];
    let archive = sandbox.archive("code.tgz", &gzip(&tar_of(entries)));
    let error = unpack(&archive, &sandbox.dest(), Limits::default()).expect_err("accepted");
    assert!(error.to_string().contains("`l`"), "{error}");
    sandbox.assert_untouched();
}

#[test]
fn device_files_and_fifos_are_refused() {
    assert_refused(&[("tty", EntryType::Char, "", b"")], "tty", "device files");
    assert_refused(
        &[("disk", EntryType::Block, "", b"")],
        "disk",
        "device files",
    );
    assert_refused(
        &[("pipe", EntryType::Fifo, "", b"")],
        "pipe",
        "device files",
    );
}

#[test]
fn size_count_and_ratio_are_capped() {
    let sandbox = Sandbox::new();
    let limits = Limits {
        max_bytes: 1 << 20,
        ..Limits::default()
    };
    let big = vec![7u8; 2 << 20];
    let archive = sandbox.archive("code.tar", &tar_of(&[("big.bin", FILE, "", &big)]));
    let (entry, reason) =
        refused_entry(unpack(&archive, &sandbox.dest(), limits).expect_err("cap"));
    assert_eq!(entry, "big.bin");
    assert!(reason.contains("1048576 bytes"), "{reason}");
    sandbox.assert_untouched();

    let sandbox = Sandbox::new();
    let names: Vec<String> = (0..11).map(|i| format!("f{i}")).collect();
    let entries: Vec<_> = names
        .iter()
        .map(|n| (n.as_str(), FILE, "", &b"x"[..]))
        .collect();
    let archive = sandbox.archive("code.tgz", &gzip(&tar_of(&entries)));
    let limits = Limits {
        max_entries: 10,
        ..Limits::default()
    };
    let (entry, reason) =
        refused_entry(unpack(&archive, &sandbox.dest(), limits).expect_err("cap"));
    assert_eq!(entry, "f10");
    assert!(reason.contains("more than 10 entries"), "{reason}");
    sandbox.assert_untouched();

    // 64 MiB of zeros gzip to about 64 KiB: a thousand-fold, refused at the default 100-fold
    // once past the 16 MiB floor, without writing the rest.
    let sandbox = Sandbox::new();
    let zeros = vec![0u8; 64 << 20];
    let archive = sandbox.archive("bomb.tgz", &gzip(&tar_of(&[("zeros", FILE, "", &zeros)])));
    let (entry, reason) =
        refused_entry(unpack(&archive, &sandbox.dest(), Limits::default()).expect_err("bomb"));
    assert_eq!(entry, "zeros");
    assert!(reason.contains("100-fold"), "{reason}");
    sandbox.assert_untouched();
}

fn zip_of(build: impl FnOnce(&mut zip::ZipWriter<std::io::Cursor<Vec<u8>>>)) -> Vec<u8> {
    let mut writer = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    build(&mut writer);
    writer.finish().expect("zip").into_inner()
}

#[test]
fn zip_archives_follow_the_same_rules() {
    let options = zip::write::SimpleFileOptions::default();
    let good = zip_of(|z| {
        z.add_directory("app/", options).expect("dir");
        z.start_file("app/main.py", options).expect("file");
        z.write_all(b"def start(args):\n    return 1\n")
            .expect("write");
        z.add_symlink("app/alias.py", "main.py", options)
            .expect("link");
    });
    let sandbox = Sandbox::new();
    let archive = sandbox.archive("code.zip", &good);
    unpack(&archive, &sandbox.dest(), Limits::default()).expect("unpacks");
    assert!(fs::read_to_string(sandbox.dest().join("app/alias.py"))
        .expect("through the link")
        .contains("def start"));

    let evil = zip_of(|z| {
        z.start_file("../../outside/evil.py", options)
            .expect("file");
        z.write_all(b"x").expect("write");
    });
    let sandbox = Sandbox::new();
    let archive = sandbox.archive("code.zip", &evil);
    let (entry, _) =
        refused_entry(unpack(&archive, &sandbox.dest(), Limits::default()).expect_err("zip slip"));
    assert_eq!(entry, "../../outside/evil.py");
    sandbox.assert_untouched();

    let link_out = zip_of(|z| {
        z.add_symlink("up", "../../outside", options).expect("link");
    });
    let sandbox = Sandbox::new();
    let archive = sandbox.archive("code.zip", &link_out);
    let (entry, reason) =
        refused_entry(unpack(&archive, &sandbox.dest(), Limits::default()).expect_err("link"));
    assert_eq!(entry, "up");
    assert!(reason.contains("outside"), "{reason}");
    sandbox.assert_untouched();
}

#[test]
fn bad_inputs_say_what_is_wrong() {
    let sandbox = Sandbox::new();
    let archive = sandbox.archive("notes.tgz", b"just some text, not an archive");
    let error = unpack(&archive, &sandbox.dest(), Limits::default()).expect_err("text");
    assert!(matches!(error, UnpackError::UnknownFormat(_)), "{error}");

    let good = sandbox.archive("code.tgz", &gzip(&tar_of(&[("a.py", FILE, "", b"x")])));
    fs::create_dir_all(sandbox.dest()).expect("dest");
    fs::write(sandbox.dest().join("keep"), "mine").expect("keep");
    let error = unpack(&good, &sandbox.dest(), Limits::default()).expect_err("not empty");
    assert!(matches!(error, UnpackError::NotEmpty(_)), "{error}");
    assert!(
        Path::new(&sandbox.dest().join("keep")).exists(),
        "a user's folder was removed"
    );

    let mut truncated = gzip(&tar_of(&[("a.py", FILE, "", &vec![1u8; 100_000])]));
    truncated.truncate(truncated.len() / 2);
    let archive = sandbox.archive("cut.tgz", &truncated);
    let dest = sandbox.root.join("builds/two");
    let error = unpack(&archive, &dest, Limits::default()).expect_err("truncated");
    assert!(!dest.exists());
    assert!(
        error.to_string().contains("a.py") || error.to_string().contains("damaged"),
        "{error}"
    );
}
