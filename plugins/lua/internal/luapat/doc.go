// Package luapat is Lua's pattern matcher, for the moonwire sandbox's
// string.find, string.match, string.gmatch and string.gsub.
//
// It is a port of the matcher in lstrlib.c of the Lua reference
// implementation (Lua 5.4's shape: tail calls are loops, and recursion is
// bounded by MaxDepth, past which a match fails with "pattern too
// complex"), with the character classes of Lua 5.1 (%a %c %d %l %p %s %u
// %w %x, the deprecated %z, and their upper-case complements; %g is not a
// class, as in 5.1) and the error messages of the reference. The Lua
// source is Copyright © 1994–2024 Lua.org, PUC-Rio, under the MIT license
// reproduced in LICENSE.lua beside this file.
//
// It exists because a matcher that cannot be stopped is a denial of
// service in a server that runs other people's scripts: Lua patterns
// backtrack, and a pattern such as "^%s*(.-)%s*$" takes time quadratic in
// its subject. A Matcher counts its steps and every CheckInterval steps
// calls its Check function; a non-nil error from Check ends the match
// with that error. It works on the subject and pattern strings in place,
// without copying them.
//
// The walk over successive matches (Iter) follows Lua 5.1, the language
// the sandbox runs: after a non-empty match the next one may be empty and
// start where it ended ("abc" with "%w*" gives "abc" and then "").
//
// This package must know nothing of gopher-lua or moonwire: it takes and
// returns Go strings and byte offsets, and leaves values, argument checks
// and output bounds to its caller.
package luapat
