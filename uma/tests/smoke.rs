use uma::{global, Flags, ZoneArgs};

#[test]
fn smoke() {
    let uma = global();
    let z = uma.create_zone(&ZoneArgs::new("smoke", 64)).unwrap();
    let mut v = Vec::new();
    for i in 0..10000 {
        let p = z.alloc(Flags::NOWAIT).unwrap();
        unsafe { *(p.as_ptr() as *mut u64) = i };
        v.push(p);
        z.check_invariants();
    }
    for (i, p) in v.drain(..).enumerate() {
        assert_eq!(unsafe { *(p.as_ptr() as *mut u64) }, i as u64);
        unsafe { z.free(p) };
    }
    z.check_invariants();
    let mut s = String::new();
    uma.write_vmstat(&mut s).unwrap();
    println!("{s}");
    assert_eq!(unsafe { uma.destroy(z) }, 0);
}
