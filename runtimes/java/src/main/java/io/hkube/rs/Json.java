package io.hkube.rs;

import java.lang.reflect.Array;
import java.math.BigDecimal;
import java.math.BigInteger;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * A small JSON parser and serializer, so the runtime needs no third-party library.
 *
 * <p>Parsing gives plain Java values: objects are {@code LinkedHashMap<String, Object>} (key order
 * kept), arrays {@code ArrayList<Object>}, integral numbers that fit are {@code Long}, other numbers
 * {@code Double}, and numbers a {@code Double} cannot hold exactly enough (integers beyond
 * {@code long}, magnitudes beyond {@code Double.MAX_VALUE}) {@code BigDecimal}; strings, booleans
 * and {@code null} map to themselves.
 *
 * <p>Serializing accepts {@code Map}, {@code Iterable} and Java arrays, {@code CharSequence},
 * {@code Character}, {@code Number}, {@code Boolean} and {@code null}. Anything else, non-finite
 * numbers and {@code byte[]} raise {@link JsonException}: JSON has no way to carry them.
 */
public final class Json {
    /** Deep enough for any real payload; shallow enough never to overflow the stack (or loop on a cycle). */
    static final int MAX_DEPTH = 1000;

    private Json() {}

    /** Raised for malformed input ({@link #offset()} says where) and for values JSON cannot carry. */
    public static final class JsonException extends IllegalArgumentException {
        private static final long serialVersionUID = 1L;
        private final int offset;

        JsonException(String message, int offset) {
            super(offset >= 0 ? message + " at offset " + offset : message);
            this.offset = offset;
        }

        JsonException(String message) {
            this(message, -1);
        }

        /** Character offset of the problem in the parsed text, or -1 for a serialization error. */
        public int offset() {
            return offset;
        }
    }

    // -- parsing -------------------------------------------------------------------------

    /** Parses one JSON value; only whitespace may follow it. */
    public static Object parse(String text) {
        Parser parser = new Parser(text);
        parser.skipWhitespace();
        Object value = parser.value(0);
        parser.skipWhitespace();
        if (parser.pos < text.length()) {
            throw new JsonException("unexpected " + describe(text.charAt(parser.pos)) + " after the JSON value", parser.pos);
        }
        return value;
    }

    private static String describe(char c) {
        if (c < 0x20 || c == 0x7f) {
            return String.format("control character U+%04X", (int) c);
        }
        return "character '" + c + "'";
    }

    private static final class Parser {
        final String s;
        int pos;

        Parser(String s) {
            this.s = s;
        }

        void skipWhitespace() {
            int n = s.length();
            while (pos < n) {
                char c = s.charAt(pos);
                if (c == ' ' || c == '\n' || c == '\r' || c == '\t') {
                    pos++;
                } else {
                    break;
                }
            }
        }

        JsonException unexpected(String expected) {
            if (pos >= s.length()) {
                return new JsonException("unexpected end of input, expected " + expected, pos);
            }
            return new JsonException("unexpected " + describe(s.charAt(pos)) + ", expected " + expected, pos);
        }

        Object value(int depth) {
            if (pos >= s.length()) {
                throw unexpected("a value");
            }
            char c = s.charAt(pos);
            switch (c) {
                case '{':
                    return object(depth + 1);
                case '[':
                    return array(depth + 1);
                case '"':
                    return string();
                case 't':
                    return literal("true", Boolean.TRUE);
                case 'f':
                    return literal("false", Boolean.FALSE);
                case 'n':
                    return literal("null", null);
                default:
                    if (c == '-' || (c >= '0' && c <= '9')) {
                        return number();
                    }
                    throw unexpected("a value");
            }
        }

        Object literal(String word, Object value) {
            if (!s.startsWith(word, pos)) {
                throw unexpected("'" + word + "'");
            }
            pos += word.length();
            return value;
        }

        Map<String, Object> object(int depth) {
            if (depth > MAX_DEPTH) {
                throw new JsonException("nesting deeper than " + MAX_DEPTH + " levels", pos);
            }
            pos++; // '{'
            Map<String, Object> map = new LinkedHashMap<>();
            skipWhitespace();
            if (pos < s.length() && s.charAt(pos) == '}') {
                pos++;
                return map;
            }
            while (true) {
                skipWhitespace();
                if (pos >= s.length() || s.charAt(pos) != '"') {
                    throw unexpected("a string key");
                }
                String key = string();
                skipWhitespace();
                if (pos >= s.length() || s.charAt(pos) != ':') {
                    throw unexpected("':'");
                }
                pos++;
                skipWhitespace();
                map.put(key, value(depth));
                skipWhitespace();
                if (pos < s.length() && s.charAt(pos) == ',') {
                    pos++;
                } else if (pos < s.length() && s.charAt(pos) == '}') {
                    pos++;
                    return map;
                } else {
                    throw unexpected("',' or '}'");
                }
            }
        }

        List<Object> array(int depth) {
            if (depth > MAX_DEPTH) {
                throw new JsonException("nesting deeper than " + MAX_DEPTH + " levels", pos);
            }
            pos++; // '['
            List<Object> list = new ArrayList<>();
            skipWhitespace();
            if (pos < s.length() && s.charAt(pos) == ']') {
                pos++;
                return list;
            }
            while (true) {
                skipWhitespace();
                list.add(value(depth));
                skipWhitespace();
                if (pos < s.length() && s.charAt(pos) == ',') {
                    pos++;
                } else if (pos < s.length() && s.charAt(pos) == ']') {
                    pos++;
                    return list;
                } else {
                    throw unexpected("',' or ']'");
                }
            }
        }

        String string() {
            int start = ++pos; // past the opening quote
            int n = s.length();
            // Common case: no escapes, so the value is a plain substring.
            while (pos < n) {
                char c = s.charAt(pos);
                if (c == '"') {
                    return s.substring(start, pos++);
                }
                if (c == '\\') {
                    break;
                }
                if (c < 0x20) {
                    throw new JsonException("unescaped " + describe(c) + " in a string", pos);
                }
                pos++;
            }
            StringBuilder out = new StringBuilder(pos - start + 16).append(s, start, pos);
            while (pos < n) {
                char c = s.charAt(pos);
                if (c == '"') {
                    pos++;
                    return out.toString();
                }
                if (c < 0x20) {
                    throw new JsonException("unescaped " + describe(c) + " in a string", pos);
                }
                if (c != '\\') {
                    out.append(c);
                    pos++;
                    continue;
                }
                if (pos + 1 >= n) {
                    break;
                }
                char e = s.charAt(pos + 1);
                switch (e) {
                    case '"': out.append('"'); break;
                    case '\\': out.append('\\'); break;
                    case '/': out.append('/'); break;
                    case 'b': out.append('\b'); break;
                    case 'f': out.append('\f'); break;
                    case 'n': out.append('\n'); break;
                    case 'r': out.append('\r'); break;
                    case 't': out.append('\t'); break;
                    case 'u':
                        // Surrogate pairs arrive as two escapes; appending both UTF-16 units rebuilds the code point.
                        out.append(hex4(pos + 2));
                        pos += 4;
                        break;
                    default:
                        throw new JsonException("invalid escape '\\" + e + "' in a string", pos);
                }
                pos += 2;
            }
            throw new JsonException("unterminated string starting", start - 1);
        }

        char hex4(int at) {
            if (at + 4 > s.length()) {
                throw new JsonException("truncated \\u escape", at - 2);
            }
            int value = 0;
            for (int i = at; i < at + 4; i++) {
                int digit = Character.digit(s.charAt(i), 16);
                if (digit < 0) {
                    throw new JsonException("invalid hex digit in a \\u escape", i);
                }
                value = value * 16 + digit;
            }
            return (char) value;
        }

        Object number() {
            int start = pos;
            int n = s.length();
            if (s.charAt(pos) == '-') {
                pos++;
            }
            if (pos >= n || !isDigit(s.charAt(pos))) {
                throw unexpected("a digit");
            }
            if (s.charAt(pos) == '0') {
                pos++;
                if (pos < n && isDigit(s.charAt(pos))) {
                    throw new JsonException("leading zero in a number", start);
                }
            } else {
                while (pos < n && isDigit(s.charAt(pos))) {
                    pos++;
                }
            }
            boolean integral = true;
            if (pos < n && s.charAt(pos) == '.') {
                integral = false;
                pos++;
                if (pos >= n || !isDigit(s.charAt(pos))) {
                    throw unexpected("a digit after the decimal point");
                }
                while (pos < n && isDigit(s.charAt(pos))) {
                    pos++;
                }
            }
            if (pos < n && (s.charAt(pos) == 'e' || s.charAt(pos) == 'E')) {
                integral = false;
                pos++;
                if (pos < n && (s.charAt(pos) == '+' || s.charAt(pos) == '-')) {
                    pos++;
                }
                if (pos >= n || !isDigit(s.charAt(pos))) {
                    throw unexpected("a digit in the exponent");
                }
                while (pos < n && isDigit(s.charAt(pos))) {
                    pos++;
                }
            }
            String literal = s.substring(start, pos);
            if (integral) {
                // At most 18 digits always fits a long; longer literals are checked.
                if (pos - start <= 18) {
                    return Long.parseLong(literal);
                }
                BigInteger big = new BigInteger(literal);
                if (big.bitLength() < 64) {
                    return big.longValue();
                }
                return new BigDecimal(big);
            }
            double d = Double.parseDouble(literal);
            if (Double.isInfinite(d)) {
                return new BigDecimal(literal);
            }
            return d;
        }

        static boolean isDigit(char c) {
            return c >= '0' && c <= '9';
        }
    }

    // -- serializing ---------------------------------------------------------------------

    /** Compact JSON for {@code value}. */
    public static String write(Object value) {
        StringBuilder out = new StringBuilder();
        write(value, out);
        return out.toString();
    }

    /** Appends compact JSON for {@code value} to {@code out}. */
    public static void write(Object value, StringBuilder out) {
        write(value, out, 0);
    }

    private static void write(Object value, StringBuilder out, int depth) {
        if (value == null) {
            out.append("null");
        } else if (value instanceof CharSequence) {
            writeString(value.toString(), out);
        } else if (value instanceof Boolean) {
            out.append(((Boolean) value).booleanValue() ? "true" : "false");
        } else if (value instanceof Number) {
            writeNumber((Number) value, out);
        } else if (value instanceof Map) {
            checkDepth(depth);
            out.append('{');
            boolean first = true;
            for (Map.Entry<?, ?> entry : ((Map<?, ?>) value).entrySet()) {
                if (!first) {
                    out.append(',');
                }
                first = false;
                writeString(key(entry.getKey()), out);
                out.append(':');
                write(entry.getValue(), out, depth + 1);
            }
            out.append('}');
        } else if (value instanceof Iterable) {
            checkDepth(depth);
            out.append('[');
            boolean first = true;
            for (Object item : (Iterable<?>) value) {
                if (!first) {
                    out.append(',');
                }
                first = false;
                write(item, out, depth + 1);
            }
            out.append(']');
        } else if (value instanceof byte[]) {
            throw new JsonException("bytes cannot be sent as JSON");
        } else if (value.getClass().isArray()) {
            checkDepth(depth);
            out.append('[');
            int length = Array.getLength(value);
            for (int i = 0; i < length; i++) {
                if (i > 0) {
                    out.append(',');
                }
                write(Array.get(value, i), out, depth + 1);
            }
            out.append(']');
        } else if (value instanceof Character) {
            writeString(value.toString(), out);
        } else {
            throw new JsonException("a " + value.getClass().getName() + " cannot be sent as JSON");
        }
    }

    private static void checkDepth(int depth) {
        if (depth >= MAX_DEPTH) {
            throw new JsonException("nesting deeper than " + MAX_DEPTH + " levels (is there a cycle?)");
        }
    }

    private static String key(Object key) {
        if (key instanceof CharSequence || key instanceof Character) {
            return key.toString();
        }
        if (key instanceof Number || key instanceof Boolean || key == null) {
            // As Python's json does: scalar keys become their text.
            StringBuilder text = new StringBuilder();
            write(key, text);
            return text.toString();
        }
        throw new JsonException("a map key of type " + key.getClass().getName() + " cannot be sent as JSON");
    }

    private static void writeNumber(Number number, StringBuilder out) {
        if (number instanceof Double || number instanceof Float) {
            double d = number.doubleValue();
            if (Double.isNaN(d) || Double.isInfinite(d)) {
                throw new JsonException(d + " cannot be sent as JSON");
            }
            // Float's own text keeps 0.1f as "0.1" rather than 0.10000000149011612.
            out.append(number instanceof Float ? Float.toString(number.floatValue()) : Double.toString(d));
        } else if (number instanceof BigDecimal) {
            out.append(((BigDecimal) number).toString());
        } else if (number instanceof Long || number instanceof Integer || number instanceof Short
                || number instanceof Byte || number instanceof BigInteger
                || number instanceof java.util.concurrent.atomic.AtomicInteger
                || number instanceof java.util.concurrent.atomic.AtomicLong) {
            out.append(number.toString());
        } else {
            // Unknown Number subclasses (DoubleAdder, user types): go through their double value.
            writeNumber(number.doubleValue(), out);
        }
    }

    private static final char[] HEX = "0123456789abcdef".toCharArray();

    private static void writeString(String s, StringBuilder out) {
        out.append('"');
        int n = s.length();
        int plain = 0; // start of the run of characters that need no escaping
        for (int i = 0; i < n; i++) {
            char c = s.charAt(i);
            String escape = null;
            boolean unicode = false;
            if (c == '"') {
                escape = "\\\"";
            } else if (c == '\\') {
                escape = "\\\\";
            } else if (c < 0x20) {
                switch (c) {
                    case '\n': escape = "\\n"; break;
                    case '\r': escape = "\\r"; break;
                    case '\t': escape = "\\t"; break;
                    case '\b': escape = "\\b"; break;
                    case '\f': escape = "\\f"; break;
                    default: unicode = true;
                }
            } else if (Character.isSurrogate(c)) {
                // A well-formed pair goes out as is; a lone surrogate cannot be UTF-8 encoded, so escape it.
                if (Character.isHighSurrogate(c) && i + 1 < n && Character.isLowSurrogate(s.charAt(i + 1))) {
                    i++;
                    continue;
                }
                unicode = true;
            } else {
                continue;
            }
            out.append(s, plain, i);
            if (unicode) {
                out.append("\\u").append(HEX[(c >> 12) & 0xf]).append(HEX[(c >> 8) & 0xf])
                        .append(HEX[(c >> 4) & 0xf]).append(HEX[c & 0xf]);
            } else {
                out.append(escape);
            }
            plain = i + 1;
        }
        out.append(s, plain, n).append('"');
    }
}
