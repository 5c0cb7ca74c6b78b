// Canonical-string vectors computed by Node itself, for drgreen_poller/canonical.py.
//
// The client and the sandbox share canonical_json and form_encode, so a mistake there signs and
// verifies the same wrong string and every round trip still passes. These vectors are the other
// side: what JavaScript (Node 20, no packages) makes of each input. Regenerate with
//   node tests/vectors/canonical.mjs > tests/vectors/canonical.json
// and tests/test_signing_vectors.py checks both that the Python functions match the committed
// file and that this script still prints exactly that file.
//
//   bodies   JSON text as sent -> JSON.stringify(JSON.parse(text)): what the guard signs for a
//            body (and, for {...} of params, for a GET without query). Inputs are JSON text so
//            that both sides read the same value: Python's json.loads sees 2**60 as an exact int,
//            1.0 as a float, "\ud800" as a lone surrogate, just as the client would hold them.
//   forms    [key, value] pairs -> new URLSearchParams(pairs).toString(): the query the client
//            builds, signs and sends.
//   queries  a raw query as received -> Express 4's req.query (qs.parse(raw, {allowPrototypes:
//            true}); only its top level, keys without brackets, is reproduced here, since qs is
//            not installed), each value as String() sees it, in JavaScript property order, then
//            what the guard signs for a GET: new URLSearchParams(req.query).toString(), or
//            JSON.stringify(req.params) when req.query has no key (PARAMS stands for a route's).
"use strict";

const bodies = [
  // numbers
  ["integers", "[0,1,-1,42,9007199254740991]"],
  ["whole floats lose .0", "[1.0,-2.0,10.0,0.0,1.0e0,100.00]"],
  ["negative zero", "[-0,-0.0,-0e5]"],
  ["decimals", "[0.1,0.5,4.35,-2.5,123456789.123456789,0.30000000000000004]"],
  ["exponent written out", "[1E3,0.1e1,2.5e-5,25e-6,1.5e2]"],
  ["large below 1e21", "[1e16,1e20,999999999999999900000,123456789012345680000]"],
  ["from 1e21 up", "[1e21,1e+21,-1e21,1.5e300,1.7976931348623157e308,1e22]"],
  ["small", "[0.000001,1e-6,1e-7,-1e-7,1.5e-7,1.23e-18,5e-324]"],
  ["integers past 2**53", "[9007199254740992,9007199254740993,1152921504606846976]"],
  ["integers past 2**64", "[18446744073709551616,123456789012345678901234567890]"],
  ["quantities and prices", '{"quantity":10.0,"price":12.50,"total":125.0}'],
  ["true false null", "[true,false,null]"],
  // key order
  ["insertion order", '{"b":1,"a":2,"c":3}'],
  ["array-index keys first", '{"b":1,"10":2,"2":3,"a":4,"0":5}'],
  ["largest array index", '{"z":0,"4294967295":1,"4294967294":2,"1":3}'],
  ["numeric-looking keys that are not indices", '{"01":1,"-1":2,"1.5":3,"1e3":4," 1":5,"1 ":6,"1":7}'],
  ["nested objects reorder too", '{"z":{"9":1,"8":2},"1":[{"b":1,"0":2}]}'],
  ["repeated key keeps its first place", '{"a":1,"b":2,"a":3}'],
  ["empty and prototype-named keys", '{"":1,"__proto__":2,"toString":3,"constructor":4}'],
  ["non-ASCII keys", '{"ë":1,"€":2,"😀":3,"a":4}'],
  // strings
  ["non-ASCII stays raw", '["Zoë","€5","😀","日本語"]'],
  ["escaped non-ASCII is re-serialised raw", '["\\u00eb","\\u20ac","\\ud83d\\ude00"]'],
  ["lone surrogates are escaped", '["\\ud800","\\udc00","a\\udbffb","\\ude00\\ud83d"]'],
  ["line and paragraph separators stay raw", '["\\u2028","\\u2029"]'],
  ["short escapes", '["\\b\\f\\n\\r\\t","\\"","\\\\","\\/"]'],
  ["control characters", '["\\u0000","\\u0001","\\u001f","\\u007f","\\u0085"]'],
  ["invisible characters stay raw", '["\\ufeff","\\u200b","\\u00a0","\\uffff"]'],
  // nesting
  ["empty containers", '[{},[],{"a":{}},[[]]]'],
  ["deep nesting", '{"items":[{"strainId":"s","quantity":2.0,"meta":{"b":[1.10,{"2":"x","1":"y"}]}}]}'],
  ["whitespace in the sent text", '{ "a" : [ 1 , 2 ] ,\n "b" : { } }'],
];

const forms = [
  ["plain pairs in order", [["orderBy", "desc"], ["take", "50"], ["page", "1"]]],
  ["never sorted", [["take", "50"], ["orderBy", "desc"]]],
  ["safe bytes", [["k", "AZaz09*-._"]]],
  ["punctuation urllib treats differently", [["k", "~!'()"]]],
  ["space and plus", [["search", "jane doe+x@ex.com"]]],
  ["URL-reserved characters", [["k", "a&b=c#d?e/f%g:h;i,j@k$l"]]],
  ["brackets, braces and quotes in a value", [["clientIds", '["a","b"]'], ["o", '{"k":1}']]],
  ["non-ASCII", [["q", "Zoë € 😀 日本"], ["é", "ß"]]],
  ["separators and control characters", [["s", "\u2028\u2029\n\r\t\u0000\u007f"]]],
  ["invisible characters", [["\u00a0", "\ufeff\u200b"]]],
  ["empty value", [["empty", ""], ["x", "1"]]],
  ["ISO timestamp", [["startDate", "2026-05-01T00:00:00.000Z"], ["endDate", "2026-05-31T23:59:59.999+01:00"]]],
  ["prototype-named keys", [["toString", "1"], ["constructor", "2"], ["hasOwnProperty", "3"]]],
];

const queries = [
  ["as the client sends it", "orderBy=desc&take=50&page=1"],
  ["array-index keys move first", "z=1&5=x&1=y&10=w"],
  ["big numeric keys", "4294967295=a&4294967294=b&01=c"],
  ["repeated key joined with commas", "a=1&a=2&b=3"],
  ["repeated key keeps its first place", "a=1&b=2&a=3&a="],
  ["malformed escapes stay raw", "a=%E0%A4%A&b=%ZZ&c=%"],
  ["empty segments and empty keys dropped", "a=1&&=c&b&=&d="],
  ["plus is a space, %2B a plus", "search=jane+doe%2Bx%40ex.com+%7E*%27%21&a+b=c+d"],
  ["lower-case and needless escapes", "x=%7e%41%2d&y=~!'()"],
  ["UTF-8 escapes", "q=Zo%C3%AB+%F0%9F%98%80&%C3%A9=%C3%9F"],
  ["a JSON array filter", "clientIds=%5B%22a%22%2C%22b%22%5D"],
  ["__proto__ is dropped", "__proto__=x&a=1"],
  ["only __proto__", "__proto__=x"],
  ["other prototype names are kept", "toString=1&constructor=2"],
  ["encoded separators in a value", "k=a%26b%3Dc%23d"],
];

// qs's decoder: "+" is a space, then decodeURIComponent, keeping the text when that throws.
function qsDecode(text) {
  const spaced = text.replace(/\+/g, " ");
  try {
    return decodeURIComponent(spaced);
  } catch {
    return spaced;
  }
}

// The top level of qs.parse(raw, {allowPrototypes: true}) for keys without brackets: empty keys
// dropped, repeated keys combined into an array, __proto__ dropped (qs's parseObject).
function expressQuery(raw) {
  const query = {};
  for (const part of raw.split("&")) {
    const pos = part.indexOf("=");
    const key = qsDecode(pos === -1 ? part : part.slice(0, pos));
    const value = pos === -1 ? "" : qsDecode(part.slice(pos + 1));
    if (key === "" || key === "__proto__") continue;
    query[key] = Object.hasOwn(query, key) ? [].concat(query[key], value) : value;
  }
  return query;
}

const PARAMS = { orderId: "o-1" };

function guardSigns(query) {
  return Object.keys(query).length > 0
    ? new URLSearchParams(query).toString()
    : JSON.stringify(PARAMS);
}

const vectors = {
  bodies: bodies.map(([name, text]) => ({ name, text, signed: JSON.stringify(JSON.parse(text)) })),
  forms: forms.map(([name, pairs]) => ({ name, pairs, signed: new URLSearchParams(pairs).toString() })),
  queries: queries.map(([name, raw]) => {
    const query = expressQuery(raw);
    return {
      name,
      raw,
      query: Object.entries(query).map(([key, value]) => [key, String(value)]),
      params: PARAMS,
      signed: guardSigns(query),
    };
  }),
};
process.stdout.write(JSON.stringify(vectors, null, 1) + "\n");
