# counter_help.awk: reads dht/node.h and prints, for each counter of
# DHT_NODE_COUNTER_MAP in order, a line
#   DHT__COUNTER_HELP(name, "the words of its comment")
# so that the HELP texts of dhtd --metrics are the comments beside the
# counters, and a counter added there gets its own without a list to keep
# (one without a comment gets ""). Run by dhtd/CMakeLists.txt at build time
# as awk -v out=FILE -f counter_help.awk node.h (no out: to stdout).
# The map ends at the first line that neither ends in a backslash nor
# leaves a comment open (a comment may go on over lines without one).
function comment_open(s,    o, c) {
  for (;;) {
    o = index(s, "/*")
    if (o == 0) return 0
    c = index(substr(s, o + 2), "*/")
    if (c == 0) return 1
    s = substr(s, o + 2 + c + 1)
  }
}
/^#define DHT_NODE_COUNTER_MAP\(X\)/ { inmap = 1; next }
inmap {
  line = $0
  more = line ~ /\\[ \t]*$/
  sub(/\\[ \t]*$/, "", line)
  text = text " " line
  if (!more && !comment_open(text)) inmap = 0
}
END {
  while ((i = index(text, "X(")) > 0) {
    text = substr(text, i + 2)
    j = index(text, ")")
    name = substr(text, 1, j - 1)
    gsub(/[ \t]/, "", name)
    text = substr(text, j + 1)
    help = ""
    c = index(text, "/*")
    n = index(text, "X(")
    if (c > 0 && (n == 0 || c < n)) {
      e = index(text, "*/")
      help = substr(text, c + 2, e - c - 2)
      text = substr(text, e + 2)
    }
    gsub(/[ \t]+/, " ", help)
    sub(/^ /, "", help)
    sub(/ $/, "", help)
    gsub(/[\\"]/, "", help) # a C string literal without escapes
    line = sprintf("DHT__COUNTER_HELP(%s, \"%s\")", name, help)
    if (out == "") print line
    else print line > out
  }
}
