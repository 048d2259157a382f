#!/bin/bash
# POSIX checks of ownership, permissions, link counts, ACL names, statfs, allocation and
# appends: each scenario runs in a folder of the mount and in a folder of a local file system
# (the reference), as root and as a second user, and what `stat` says must agree.
# Usage (as root): posix-checks.sh MOUNT_DIR LOCAL_DIR USER GROUP
#   USER: a user other than root; GROUP: a supplementary group of USER that is not its
#   primary group. Both folders must be reachable by USER. Prints one line per check and
#   "N passed, M failed"; exits 1 if any failed.
set -u
MNT=$1 LOCAL=$2 USER_NAME=$3 GROUP_NAME=$4
pass=0 fail=0
ok() { pass=$((pass + 1)); echo "ok   $1"; }
ko() { fail=$((fail + 1)); echo "FAIL $1${2:+: $2}"; }
as_user() { runuser -u "$USER_NAME" -- sh -c "$1"; }
# Runs scenario function $2 in a fresh folder named $1 on both sides; compares its output.
same() {
  local name=$1 fn=$2 a b
  rm -rf "${MNT:?}/$name" "${LOCAL:?}/$name"
  mkdir -m 0777 "$MNT/$name" "$LOCAL/$name"
  a=$(cd "$MNT/$name" && $fn 2>&1)
  b=$(cd "$LOCAL/$name" && $fn 2>&1)
  if [ "$a" = "$b" ]; then ok "$name"; else ko "$name" "mount: [$a] local: [$b]"; fi
}

s_owner_of_new() {
  as_user 'touch f; echo x >> f; mkdir d; ln -s f l; cat f' 2>&1
  stat -c '%n %a %u:%g' f d
  stat -c '%n %u:%g' l
}
s_non_owner_chmod() {
  touch f
  as_user 'chmod 777 f' >/dev/null 2>&1 && echo allowed || echo refused
  stat -c '%a' f
}
s_chown_other_user() {
  as_user 'touch f; chown 0 f' >/dev/null 2>&1 && echo allowed || echo refused
  stat -c '%u' f
}
s_chgrp_own_group() {
  as_user "touch f; chgrp $GROUP_NAME f" >/dev/null 2>&1 && echo allowed || echo refused
  stat -c '%G' f
}
s_chgrp_foreign_group() {
  as_user 'touch f; chgrp root f' >/dev/null 2>&1 && echo allowed || echo refused
  stat -c '%G' f
}
s_setgid_dir() {
  mkdir g && chgrp "$GROUP_NAME" g && chmod 2777 g
  as_user 'touch g/f; mkdir g/sub; mkdir g/sub/deeper'
  stat -c '%n %a %G' g/f g/sub g/sub/deeper
}
s_write_clears_setuid() {
  touch f && chmod 6777 f
  as_user 'echo x >> f'
  stat -c '%a' f
  touch h && chmod 6777 h
  echo x >> h
  stat -c '%a' h
}
s_chown_clears_setuid() {
  touch f && chmod 6755 f && chown "$USER_NAME" f
  stat -c '%a' f
  mkdir d && chmod 2755 d && chown "$USER_NAME" d
  stat -c '%a' d
}
s_dir_nlink() {
  mkdir -p a/b a/c a/d/e && touch a/f
  stat -c '%n %h' a a/b a/d
  rmdir a/c
  stat -c '%n %h' a
}
s_cp_a_modes() {
  mkdir src src/x src/y && touch src/r src/x/s src/y/t
  chmod 0644 src/r && chmod 0755 src/x/s && chmod 2775 src/y && chmod 0600 src/y/t && chmod 0750 src/x
  cp -a src copy && cp -p src/r copied
  stat -c '%n %a' copy copy/r copy/x copy/x/s copy/y copy/y/t copied
}
s_acl_names() {
  touch f
  python3 -c 'import os
try:
    os.setxattr("f", "system.posix_acl_access", b"\x02\x00\x00\x00")
    print("stored")
except OSError as e:
    print(os.strerror(e.errno))'
}
s_sparse_blocks() {
  truncate -s 64M sparse
  du -k sparse | cut -f1
  dd if=/dev/zero of=sparse bs=1M count=1 seek=32 conv=notrunc status=none
  sync
  du -k sparse | cut -f1
  head -c 5000 /dev/urandom > small
  du -k small | cut -f1
}
s_append() {
  : > log
  for w in a b; do
    python3 -c 'import os, sys
fd = os.open("log", os.O_WRONLY | os.O_APPEND)
for _ in range(40): os.write(fd, sys.argv[1].encode() * 200000)' "$w" &
  done
  wait
  stat -c '%s' log
  # Every 200,000-byte record holds one letter only: no append overwrote another.
  python3 -c 'd=open("log","rb").read(); r=[d[i:i+200000] for i in range(0,len(d),200000)]; print(all(len(set(x))==1 for x in r), [x[0] for x in r].count(97))'
}

# A descriptor outlives its name and its folder: fstat, read and write through it.
s_open_after_rmdir() {
  mkdir d && printf 'held data' > d/f
  python3 -c '
import os
fd = os.open("d/f", os.O_RDWR)
os.unlink("d/f"); os.rmdir("d")
st = os.fstat(fd)
print(st.st_nlink, st.st_size, os.pread(fd, 64, 0).decode())
os.pwrite(fd, b"!", st.st_size)
print(os.fstat(fd).st_size, os.pread(fd, 64, 0).decode())
os.close(fd)'
  ls -A
}
# The names of a file are one file: nlink through each at once, a descriptor opened before the
# second name sees what is written through it, and a shared mapping through one name shows
# through the other.
s_names_one_file() {
  printf 'hello world\n' > a
  python3 -c '
import mmap, os
ra = os.open("a", os.O_RDONLY)
os.link("a", "b")
print(os.stat("a").st_nlink, os.stat("b").st_nlink, os.fstat(ra).st_nlink)
with open("b", "r+b") as f: f.write(b"HELLO")
print(os.pread(ra, 5, 0).decode())
fd = os.open("b", os.O_RDWR)
m = mmap.mmap(fd, 0, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
m[6:11] = b"WORLD"; m.flush(); m.close(); os.close(fd)
print(os.pread(ra, 12, 0).decode().strip())
os.unlink("b")
print(os.fstat(ra).st_nlink, os.stat("a").st_nlink)
os.close(ra)'
}

same owner-of-new s_owner_of_new
same non-owner-chmod s_non_owner_chmod
same chown-other-user s_chown_other_user
same chgrp-own-group s_chgrp_own_group
same chgrp-foreign-group s_chgrp_foreign_group
same setgid-dir s_setgid_dir
same write-clears-setuid s_write_clears_setuid
same chown-clears-setuid s_chown_clears_setuid
same dir-nlink s_dir_nlink
same cp-a-modes s_cp_a_modes
same sparse-blocks s_sparse_blocks
same append s_append
same open-after-rmdir s_open_after_rmdir
same names-one-file s_names_one_file

# POSIX ACL names are refused (a local ext4 stores them: no reference here).
rm -rf "$MNT/acl-names" && mkdir "$MNT/acl-names"
got=$(cd "$MNT/acl-names" && s_acl_names 2>&1)
if [ "$got" = "Operation not supported" ]; then ok acl-names; else ko acl-names "$got"; fi

# statfs: sizes a tool can use (the local disk is no reference for these numbers).
read -r blocks bfree bavail bsize frsize < <(stat -f -c '%b %f %a %s %S' "$MNT")
if [ "$blocks" -gt 0 ] && [ "$bavail" -gt 0 ] && [ "$bfree" = "$bavail" ] && [ "$bfree" -le "$blocks" ] && [ "$bsize" = "$frsize" ]; then
  ok statfs-sizes
else
  ko statfs-sizes "$blocks $bfree $bavail $bsize $frsize"
fi
size=$(df -B1 --output=size "$MNT" | tail -1 | tr -d ' ')
if [ "$size" -ge $((1 << 40)) ]; then ok df-size; else ko df-size "$size"; fi

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
