//! The agent's RandR resize against a real Xvfb: shrinking and growing back within the size
//! Xvfb was started with (adding modes Xvfb does not have), and a clear refusal beyond it.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use vdesk_agent::input::resize::set_screen_size;
use x11rb::connection::Connection;
use x11rb::protocol::xproto::ConnectionExt as _;

/// An Xvfb server on a free display number, killed on drop.
struct Xvfb {
    child: Child,
    display: String,
}

impl Xvfb {
    fn start(size: &str) -> Xvfb {
        let base = 150 + (std::process::id() % 40) * 2;
        for n in base..base + 60 {
            if std::path::Path::new(&format!("/tmp/.X11-unix/X{n}")).exists()
                || std::path::Path::new(&format!("/tmp/.X{n}-lock")).exists()
            {
                continue;
            }
            #[allow(clippy::zombie_processes)] // waited for in Drop
            let child = Command::new("Xvfb")
                .args([&format!(":{n}"), "-screen", "0", size, "-nolisten", "tcp"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("Xvfb must be installed (apt-get install xvfb)");
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if std::path::Path::new(&format!("/tmp/.X11-unix/X{n}")).exists() {
                    return Xvfb {
                        child,
                        display: format!(":{n}"),
                    };
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            panic!("Xvfb :{n} did not come up");
        }
        panic!("no free X display number");
    }
}

impl Drop for Xvfb {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn resizes_the_xvfb_screen_within_its_maximum() {
    let x = Xvfb::start("1600x900x24");
    let (conn, screen) = x11rb::connect(Some(&x.display)).unwrap();
    let root = conn.setup().roots[screen].root;
    let size = || {
        let g = conn.get_geometry(root).unwrap().reply().unwrap();
        (g.width, g.height)
    };
    assert_eq!(size(), (1600, 900));
    set_screen_size(&conn, root, 1024, 600).unwrap();
    assert_eq!(size(), (1024, 600));
    set_screen_size(&conn, root, 1280, 720).unwrap();
    assert_eq!(size(), (1280, 720));
    set_screen_size(&conn, root, 1600, 900).unwrap();
    assert_eq!(size(), (1600, 900));
    let err = set_screen_size(&conn, root, 1920, 1080).unwrap_err();
    assert!(err.contains("1600x900"), "{err}");
    assert_eq!(size(), (1600, 900));
}
