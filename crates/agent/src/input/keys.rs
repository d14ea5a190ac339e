//! Keys, as pure functions: a browser key (`KeyboardEvent.key` + `.code`) to an X keysym, and a
//! keysym to the keycode to press in a given keyboard mapping with the modifiers held. No X
//! connection here; `inject.rs` fetches the mapping and binds spare keycodes.
//!
//! The character the user typed (`key`) wins over the physical key (`code`): the browser has
//! already applied the user's own layout, so typing `@` on a German keyboard gives `@` in the VM
//! whatever the VM's layout is. `code` is the fallback for keys with no usable `key`.

/// An X keysym.
pub type Keysym = u32;

pub const NO_SYMBOL: Keysym = 0;
pub const XK_SHIFT_L: Keysym = 0xffe1;
pub const XK_SHIFT_R: Keysym = 0xffe2;
pub const XK_ISO_LEVEL3_SHIFT: Keysym = 0xfe03;
pub const XK_MODE_SWITCH: Keysym = 0xff7e;

/// What to do with a browser key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyAction {
    /// Press/release this keysym.
    Keysym(Keysym),
    /// Nothing to inject (a dead key or IME composition: the composed character comes next).
    Ignore,
}

/// Maps a DOM `key` / `code` pair to a keysym.
pub fn keysym_for(key: &str, code: &str) -> Option<KeyAction> {
    if matches!(key, "Dead" | "Process" | "Compose" | "Unidentified") {
        if key == "Unidentified" {
            return keysym_for_code(code).map(KeyAction::Keysym);
        }
        return Some(KeyAction::Ignore);
    }
    let mut chars = key.chars();
    if let (Some(c), None) = (chars.next(), chars.next()) {
        return Some(KeyAction::Keysym(keysym_for_char(c)));
    }
    if let Some(sym) = named_keysym(key, code) {
        return Some(KeyAction::Keysym(sym));
    }
    keysym_for_code(code).map(KeyAction::Keysym)
}

/// The keysym of one character: Latin-1 keysyms equal their code point, everything else is
/// `0x01000000 + code point` (X's Unicode keysyms); control characters map to their keys.
pub fn keysym_for_char(c: char) -> Keysym {
    let cp = c as u32;
    match cp {
        0x08 => 0xff08,
        0x09 => 0xff09,
        0x0a | 0x0d => 0xff0d,
        0x1b => 0xff1b,
        0x7f => 0xffff,
        0x20..=0x7e | 0xa0..=0xff => cp,
        _ => 0x0100_0000 + cp,
    }
}

/// The character a keysym types, if it is a character (the inverse of `keysym_for_char`, plus
/// the legacy keysyms Debian's layouts use for a few common characters).
pub fn char_for_keysym(sym: Keysym) -> Option<char> {
    match sym {
        0x20..=0x7e | 0xa0..=0xff => char::from_u32(sym),
        0x0100_0100..=0x0110_ffff => char::from_u32(sym - 0x0100_0000),
        0x20ac => Some('€'),
        0xff0d | 0xff8d => Some('\n'),
        0xff09 => Some('\t'),
        _ => None,
    }
}

fn named_keysym(key: &str, code: &str) -> Option<Keysym> {
    let right = code.ends_with("Right");
    let numpad = code.starts_with("Numpad");
    Some(match key {
        "Enter" if numpad => 0xff8d,
        "Enter" => 0xff0d,
        "Tab" => 0xff09,
        "Backspace" => 0xff08,
        "Escape" => 0xff1b,
        "Delete" => 0xffff,
        "Insert" => 0xff63,
        "Home" => 0xff50,
        "End" => 0xff57,
        "PageUp" => 0xff55,
        "PageDown" => 0xff56,
        "ArrowLeft" => 0xff51,
        "ArrowUp" => 0xff52,
        "ArrowRight" => 0xff53,
        "ArrowDown" => 0xff54,
        "Shift" if right => XK_SHIFT_R,
        "Shift" => XK_SHIFT_L,
        "Control" if right => 0xffe4,
        "Control" => 0xffe3,
        "Alt" if right => 0xffea,
        "Alt" => 0xffe9,
        "AltGraph" => XK_ISO_LEVEL3_SHIFT,
        "Meta" | "OS" | "Super" if right => 0xffec,
        "Meta" | "OS" | "Super" => 0xffeb,
        "CapsLock" => 0xffe5,
        "NumLock" => 0xff7f,
        "ScrollLock" => 0xff14,
        "Pause" => 0xff13,
        "PrintScreen" => 0xff61,
        "ContextMenu" => 0xff67,
        "Help" => 0xff6a,
        "Clear" => 0xff0b,
        _ => {
            let n: u32 = key.strip_prefix('F')?.parse().ok()?;
            if !(1..=35).contains(&n) {
                return None;
            }
            0xffbe + n - 1
        }
    })
}

/// The keysym of a physical key on a US layout (for keys whose `key` says nothing useful).
pub fn keysym_for_code(code: &str) -> Option<Keysym> {
    if let Some(l) = code.strip_prefix("Key") {
        let mut c = l.chars();
        if let (Some(ch @ 'A'..='Z'), None) = (c.next(), c.next()) {
            return Some(ch.to_ascii_lowercase() as u32);
        }
        return None;
    }
    if let Some(d) = code.strip_prefix("Digit") {
        let mut c = d.chars();
        if let (Some(ch @ '0'..='9'), None) = (c.next(), c.next()) {
            return Some(ch as u32);
        }
        return None;
    }
    Some(match code {
        "Space" => 0x20,
        "Minus" => '-' as u32,
        "Equal" => '=' as u32,
        "BracketLeft" => '[' as u32,
        "BracketRight" => ']' as u32,
        "Backslash" => '\\' as u32,
        "Semicolon" => ';' as u32,
        "Quote" => '\'' as u32,
        "Backquote" => '`' as u32,
        "Comma" => ',' as u32,
        "Period" => '.' as u32,
        "Slash" => '/' as u32,
        "IntlBackslash" => '<' as u32,
        "ShiftLeft" => XK_SHIFT_L,
        "ShiftRight" => XK_SHIFT_R,
        "ControlLeft" => 0xffe3,
        "ControlRight" => 0xffe4,
        "AltLeft" => 0xffe9,
        "AltRight" => XK_ISO_LEVEL3_SHIFT,
        "MetaLeft" => 0xffeb,
        "MetaRight" => 0xffec,
        "Enter" => 0xff0d,
        "NumpadEnter" => 0xff8d,
        "Tab" => 0xff09,
        "Backspace" => 0xff08,
        "Escape" => 0xff1b,
        _ => return named_keysym(code, code),
    })
}

/// Whether this keysym is a modifier whose state we track to choose a keycode's level.
pub fn is_shift(sym: Keysym) -> bool {
    sym == XK_SHIFT_L || sym == XK_SHIFT_R
}

pub fn is_level3(sym: Keysym) -> bool {
    sym == XK_ISO_LEVEL3_SHIFT || sym == XK_MODE_SWITCH
}

/// The X server's core keyboard mapping: `per_keycode` keysyms for each keycode from `min`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Keymap {
    pub min: u8,
    pub per_keycode: usize,
    pub syms: Vec<Keysym>,
}

impl Keymap {
    pub fn keycodes(&self) -> impl Iterator<Item = (u8, &[Keysym])> {
        let per = self.per_keycode.max(1);
        self.syms
            .chunks(per)
            .enumerate()
            .filter_map(move |(i, row)| Some((u8::try_from(usize::from(self.min) + i).ok()?, row)))
    }

    pub fn row(&self, keycode: u8) -> Option<&[Keysym]> {
        let i = usize::from(keycode.checked_sub(self.min)?);
        let per = self.per_keycode.max(1);
        self.syms.get(i * per..(i + 1) * per)
    }

    /// Keycodes with no keysym at all: spare ones that can be bound to anything.
    pub fn spare_keycodes(&self) -> Vec<u8> {
        self.keycodes()
            .filter(|(_, row)| row.iter().all(|&s| s == NO_SYMBOL))
            .map(|(k, _)| k)
            .collect()
    }
}

/// The core-map column that the held modifiers select: 0 plain, 1 Shift, 4 AltGr (XKB's
/// group 1 level 3 in the core map), 5 AltGr+Shift.
pub fn column(shift: bool, level3: bool) -> usize {
    match (shift, level3) {
        (false, false) => 0,
        (true, false) => 1,
        (false, true) => 4,
        (true, true) => 5,
    }
}

/// The keycode that gives `sym` when pressed with the modifiers now held, if the mapping has
/// one. Modifier and function keys (no character) match at any level: their effect does not
/// depend on Shift. A character needs the exact level, or it would come out as a different
/// character; `None` then means "bind a spare keycode".
pub fn find_keycode(map: &Keymap, sym: Keysym, shift: bool, level3: bool) -> Option<u8> {
    if sym == NO_SYMBOL {
        return None;
    }
    let col = column(shift, level3);
    let is_char = char_for_keysym(sym).is_some() && sym != 0xff0d && sym != 0xff09;
    let mut any = None;
    for (kc, row) in map.keycodes() {
        let at = |c: usize| row.get(c).copied().unwrap_or(NO_SYMBOL);
        if !is_char {
            if row.contains(&sym) {
                // Prefer the key where it is the first symbol (e.g. Shift_L on the Shift key).
                if at(0) == sym {
                    return Some(kc);
                }
                any = any.or(Some(kc));
            }
            continue;
        }
        if effective(row, col) == sym {
            return Some(kc);
        }
    }
    any
}

/// The keysym a key row gives at `col`, as X clients resolve it: a missing level falls back to
/// the level below (a key with only `[a]` gives `a` with Shift held too, `[x, X]` gives `x`
/// with AltGr held when the row has no level 3).
pub fn effective(row: &[Keysym], col: usize) -> Keysym {
    let at = |c: usize| row.get(c).copied().unwrap_or(NO_SYMBOL);
    let mut sym = at(col);
    if sym == NO_SYMBOL && col >= 4 {
        sym = at(col - 4);
        if sym == NO_SYMBOL && col == 5 {
            sym = at(0);
        }
    }
    if sym == NO_SYMBOL && col % 2 == 1 {
        sym = at(col - 1);
    }
    sym
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn sym(key: &str, code: &str) -> Keysym {
        match keysym_for(key, code) {
            Some(KeyAction::Keysym(s)) => s,
            other => panic!("{key}/{code}: {other:?}"),
        }
    }

    #[test]
    fn characters_become_their_keysyms() {
        assert_eq!(sym("a", "KeyA"), 0x61);
        assert_eq!(sym("A", "KeyA"), 0x41);
        assert_eq!(sym("@", "Digit2"), 0x40);
        assert_eq!(sym("<", "IntlBackslash"), 0x3c);
        assert_eq!(sym(" ", "Space"), 0x20);
        assert_eq!(sym("ß", "Minus"), 0xdf);
        assert_eq!(sym("é", "Digit2"), 0xe9);
        assert_eq!(sym("€", "KeyE"), 0x0100_20ac);
        assert_eq!(sym("ł", ""), 0x0100_0142);
        assert_eq!(char_for_keysym(0x0100_20ac), Some('€'));
        assert_eq!(char_for_keysym(0xdf), Some('ß'));
        assert_eq!(char_for_keysym(0xff51), None);
    }

    #[test]
    fn named_keys_and_sides() {
        assert_eq!(sym("Enter", "Enter"), 0xff0d);
        assert_eq!(sym("Enter", "NumpadEnter"), 0xff8d);
        assert_eq!(sym("Shift", "ShiftLeft"), XK_SHIFT_L);
        assert_eq!(sym("Shift", "ShiftRight"), XK_SHIFT_R);
        assert_eq!(sym("Control", "ControlRight"), 0xffe4);
        assert_eq!(sym("AltGraph", "AltRight"), XK_ISO_LEVEL3_SHIFT);
        assert_eq!(sym("Meta", "MetaLeft"), 0xffeb);
        assert_eq!(sym("F1", "F1"), 0xffbe);
        assert_eq!(sym("F12", "F12"), 0xffc9);
        assert_eq!(sym("ArrowLeft", "ArrowLeft"), 0xff51);
        assert_eq!(sym("Unidentified", "KeyQ"), 0x71);
        assert_eq!(keysym_for("Dead", "BracketLeft"), Some(KeyAction::Ignore));
        assert_eq!(keysym_for("F99", ""), None);
        assert_eq!(keysym_for("Nonsense", "Nonsense"), None);
    }

    /// A slice of Debian's `de` layout as the core map shows it (7 keysyms per keycode).
    fn de() -> Keymap {
        let mut syms = vec![NO_SYMBOL; 7 * 100];
        let mut set = |kc: usize, row: &[Keysym]| {
            let i = (kc - 8) * 7;
            syms[i..i + row.len()].copy_from_slice(row);
        };
        set(11, &[0x32, 0x22, 0x32, 0x22, 0xb2, 0]); // 2 "  ²
        set(20, &[0xdf, 0x3f, 0xdf, 0x3f, 0x5c, 0]); // ß ?  backslash
        set(24, &[0x71, 0x51, 0x71, 0x51, 0x40, 0]); // q Q  @
        set(38, &[0x61, 0x41]); // a A
        set(50, &[XK_SHIFT_L]);
        set(92, &[XK_ISO_LEVEL3_SHIFT]);
        set(94, &[0x3c, 0x3e, 0x3c, 0x3e, 0x7c, 0]); // < >  |
        Keymap {
            min: 8,
            per_keycode: 7,
            syms,
        }
    }

    #[test]
    fn finds_keycodes_at_the_level_the_modifiers_select() {
        let m = de();
        assert_eq!(find_keycode(&m, 0x61, false, false), Some(38));
        assert_eq!(find_keycode(&m, 0x41, true, false), Some(38));
        assert_eq!(find_keycode(&m, 0xdf, false, false), Some(20));
        assert_eq!(find_keycode(&m, 0x40, false, true), Some(24)); // AltGr+q
        assert_eq!(find_keycode(&m, 0x3c, false, false), Some(94));
        // The wrong level would type another character: bind a spare keycode instead.
        assert_eq!(find_keycode(&m, 0x40, false, false), None); // q
        assert_eq!(find_keycode(&m, 0x40, true, false), None); // Q
        assert_eq!(find_keycode(&m, 0x3c, true, false), None); // >
        assert_eq!(find_keycode(&m, 0xe9, false, false), None); // é is not on a de keyboard
                                                                // Modifiers match at any level.
        assert_eq!(find_keycode(&m, XK_SHIFT_L, true, false), Some(50));
        assert_eq!(
            find_keycode(&m, XK_ISO_LEVEL3_SHIFT, false, false),
            Some(92)
        );
        assert_eq!(find_keycode(&m, NO_SYMBOL, false, false), None);
    }

    #[test]
    fn spare_keycodes_are_the_empty_ones() {
        let m = de();
        let spare = m.spare_keycodes();
        assert!(spare.contains(&8) && spare.contains(&100));
        assert!(!spare.contains(&38) && !spare.contains(&50));
        assert_eq!(m.row(38).unwrap()[..2], [0x61, 0x41]);
        assert_eq!(m.row(7), None);
        // A spare keycode bound to [sym, sym] gives sym at every level.
        assert_eq!(effective(&[0x40, 0x40], column(true, true)), 0x40);
        assert_eq!(effective(&[0x61], column(true, false)), 0x61);
    }
}
