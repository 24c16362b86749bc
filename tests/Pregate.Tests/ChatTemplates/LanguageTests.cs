// The Jinja subset feature by feature. Every expected string is what Jinja2 3.1 renders in transformers' chat-template
// environment (trim_blocks, lstrip_blocks, json.dumps tojson), i.e. Python semantics for values and operators.
using Pregate.Engine.ChatTemplates;
using Xunit.Abstractions;
using static Pregate.Tests.ChatTemplates.ChatTemplateTesting;

namespace Pregate.Tests.ChatTemplates;

public sealed class LanguageTests(ITestOutputHelper output)
{
    private const string Data = """{"x": {"a": 1, "b": 2}, "people": [{"name": "Ann", "age": 31}, {"name": "bob", "age": 25}, {"name": "Cy"}]}""";

    private void Check(string template, string expected)
    {
        var options = new ChatTemplateOptions { Clock = new FixedClock(new DateTimeOffset(2024, 7, 26, 9, 5, 3, TimeSpan.Zero)) };
        string actual = Render(template, Data, options);
        output.WriteLine($"{template} => {actual}");
        Assert.Equal(expected, actual);
    }

    [Theory]
    [InlineData("{{ 1 }} {{ -2 }} {{ 1.0 }} {{ 1.5e-5 }} {{ 1e16 }} {{ 0.1 + 0.2 }} {{ 1_000 }}", "1 -2 1.0 1.5e-05 1e+16 0.30000000000000004 1000")]
    [InlineData("{{ true }} {{ False }} {{ none }} {{ None }}", "True False None None")]
    [InlineData("{{ 'single' }} {{ \"double\" }} {{ 'a' 'b' }} {{ 'tab\\there' }} {{ 'esc\\x41\\u00e9\\101\\q' }}", "single double ab tab\there escAéA\\q")]
    [InlineData("{{ [1, 'a', \"b'c\", none, 1.5] }} {{ {'a': 1, 'b': [true]} }} {{ (1,) }} {{ (1, 2) }} {{ () }}",
        "[1, 'a', \"b'c\", None, 1.5] {'a': 1, 'b': [True]} (1,) (1, 2) ()")]
    [InlineData("{{ 7 // 2 }} {{ -7 // 2 }} {{ -7 % 3 }} {{ 7 % -3 }} {{ 7 / 2 }} {{ 10 / 5 }} {{ 2 ** 10 }} {{ 2 ** -1 }} {{ 1 + true }}",
        "3 -4 2 -2 3.5 2.0 1024 0.5 2")]
    [InlineData("{{ 7.5 // 2 }} {{ -7.5 % 2 }} {{ 3 * 'ab' }} {{ [0] * 3 }} {{ 1e300 * 1e10 }} {{ 123456789.0 * 1e10 }}",
        "3.0 0.5 ababab [0, 0, 0] inf 1.23456789e+18")]
    [InlineData("{{ -2 ** 2 }} {{ 2 ** 3 ** 2 }} {{ 1 + 2 * 3 - 4 / 2 }} {{ 'a' ~ (1 + 2) }} {{ 1 ~ 2 * 3 }} {{ not 1 == 2 }} {{ 1 - -1 }}", "4 64 5.0 a3 16 True 2")]
    [InlineData("{{ 'x' ~ 1 ~ none ~ undefined_name }}|{{ 1 < 2 < 3 }}|{{ 3 < 2 < 5 }}|{{ 'b' in 'abc' }}{{ 2 not in [1] }}|{{ not none }}",
        "x1None|True|False|TrueTrue|True")]
    [InlineData("{{ none or 'd' }}|{{ 0 and 1 }}|{{ 1 and 2 }}|{{ '' or [] }}|{{ x and x.a }}", "d|0|2|[]|1")]
    [InlineData("{{ 1 == 1.0 }} {{ [1] == [1.0] }} {{ (1,) == [1] }} {{ 'a' < 'b' }} {{ [1, 2] < [1, 3] }} {{ {'a': 1} == {'a': 1.0} }}",
        "True True False True True True")]
    [InlineData("{{ 1 if true else 2 }} {{ 1 if false else 2 if false else 3 }} {{ 'x' if false }}|{{ (1 if false) is defined }}", "1 3 |False")]
    public void Expressions(string template, string expected) => Check(template, expected);

    [Theory]
    [InlineData("{{ x.a }} {{ x['b'] }} {{ x.missing }}|{{ x['missing'] }}|{{ people[0].name }} {{ people[-1]['name'] }} {{ people.5 }}|{{ people.0.age }}",
        "1 2 ||Ann Cy |31")]
    [InlineData("{{ 'abc'[::-1] }} {{ [1, 2, 3][1:] }} {{ [1, 2, 3, 4][::2] }} {{ [1, 2, 3, 4][-2:] }} {{ 'hello'[1:-1] }} {{ [1, 2, 3][5:] }}",
        "cba [2, 3] [1, 3] [3, 4] ell []")]
    [InlineData("{{ 'abc'[1] }}{{ 'abc'[-1] }}|{{ 'abc'[9] }}|{{ range(10)[2:8:3]|list }} {{ range(5, 0, -2)|list }}", "bc||[2, 5] [5, 3, 1]")]
    [InlineData("{{ 'αβγ😀'|length }} {{ 'αβγ😀'[3] }} {{ 'αβγ😀'|reverse }} {{ '😀'|tojson }}", "4 😀 😀γβα \"😀\"")]
    // Attribute access on an undefined value gives undefined here; Jinja's default Undefined would raise instead.
    [InlineData("{{ undefined_name }}|{{ undefined_name.attr }}|{{ undefined_name['k'].x }}|{{ undefined_name is defined }}|{{ x.a.b is defined }}",
        "|||False|False")]
    public void AttributeItemAndSliceAccess(string template, string expected) => Check(template, expected);

    [Theory]
    [InlineData("{{ '  x '.strip() }}|{{ 'xxaxx'.strip('x') }}|{{ '  x '.lstrip() }}|{{ '  x '.rstrip() }}|{{ '\\n\\nx\\n'.strip('\\n') }}", "x|a|x |  x|x")]
    [InlineData("{{ 'a,b,,c'.split(',') }} {{ ' a  b '.split() }} {{ 'a b c'.split(' ', 1) }} {{ 'a-b-c'.rsplit('-', 1) }} {{ 'a\\nb\\r\\nc'.splitlines() }}",
        "['a', 'b', '', 'c'] ['a', 'b'] ['a', 'b c'] ['a-b', 'c'] ['a', 'b', 'c']")]
    [InlineData("{{ 'abc'.startswith('a') }} {{ 'abc'.startswith(('x', 'a')) }} {{ 'abc'.endswith('bc') }} {{ 'abc'.endswith('x') }}", "True True True False")]
    [InlineData("{{ 'Hello'.replace('l', 'L') }} {{ 'aaa'.replace('a', 'b', 2) }} {{ 'hello world'.title() }} {{ \"don't\".title() }} {{ 'HeLLo'.capitalize() }}",
        "HeLLo bba Hello World Don'T Hello")]
    [InlineData("{{ 'MiXed'.upper() }} {{ 'MiXed'.lower() }} {{ 'hello'.find('l') }} {{ 'hello'.count('l') }} {{ '-'.join(['a', 'b']) }}", "MIXED mixed 2 2 a-b")]
    [InlineData("{{ '{} {name} {}'.format(1, 2, name='n') }} {{ '{0}{1}{0}'.format('a', 'b') }} {{ '{{literal}}'.format() }}", "1 n 2 aba {literal}")]
    [InlineData("{{ x.items()|list }} {{ x.get('a') }} {{ x.get('z', 'd') }} {{ x.get('z') }} {{ x.keys()|list }} {{ x.values()|list }}",
        "[('a', 1), ('b', 2)] 1 d None ['a', 'b'] [1, 2]")]
    // list.append is allowed (some templates build lists with it); transformers' immutable sandbox would refuse it.
    [InlineData("{% set l = [1] %}{% set _ = l.append(2) %}{{ l }} {{ l.index(2) }} {{ l.count(1) }}", "[1, 2] 1 1")]
    public void Methods(string template, string expected) => Check(template, expected);

    [Theory]
    [InlineData("{{ '  x  '|trim }}|{{ 'xxaxx'|trim('x') }}|{{ 'hello world'|capitalize }}|{{ 'a-b c'|title }}|{{ 'héllo'|upper }}|{{ 'ABC'|lower }}",
        "x|a|Hello world|A-B C|HÉLLO|abc")]
    [InlineData("{{ [3, 1, 2]|first }}{{ [3, 1, 2]|last }}|{{ []|first is defined }}|{{ 'abc'|list }}|{{ {'a': 1}|list }}|{{ [1, 2]|count }}|{{ 'abc'|length }}|{{ undefined_name|length }}",
        "32|False|['a', 'b', 'c']|['a']|2|3|0")]
    [InlineData("{{ 'x'|default('y') }}{{ undefined_name|default('y') }}{{ ''|default('y', true) }}{{ ''|d('z') }}{{ none|default('n') }}", "xyyNone")]
    [InlineData("{{ '1.5'|float }} {{ '12'|int }} {{ '1.9'|int }} {{ 'x'|int }} {{ 3.7|int }} {{ true|string }} {{ 1|float }} {{ 'ff'|int(base=16) }} {{ 'z'|float(2) }}",
        "1.5 12 1 0 3 True 1.0 255 2")]
    [InlineData("{{ [1, 2, 3]|join }} {{ [1, 2, 3]|join('-') }} {{ people|join(', ', attribute='name') }} {{ people|map(attribute='name')|join(',') }}",
        "123 1-2-3 Ann, bob, Cy Ann,bob,Cy")]
    [InlineData("{{ people|selectattr('age')|map(attribute='name')|list }} {{ people|rejectattr('age', 'defined')|map(attribute='name')|list }}",
        "['Ann', 'bob'] ['Cy']")]
    [InlineData("{{ [{'r': 'u'}, {'r': 'a'}]|selectattr('r', 'equalto', 'u')|list }} {{ people|selectattr('age', 'defined')|selectattr('age', 'gt', 30)|map(attribute='name')|first }}",
        "[{'r': 'u'}] Ann")]
    [InlineData("{{ [1, 2, 3]|select('odd')|list }} {{ [1, 2, 3]|reject('odd')|list }} {{ [1, 2, 3]|map('string')|join }} {{ ['a', 'B']|map('upper')|list }} {{ [0, 1]|select|list }}",
        "[1, 3] [2] 123 ['A', 'B'] [1]")]
    [InlineData("{{ people|map(attribute='age', default=0)|list }} {{ people|selectattr('age')|sum(attribute='age', start=1) }} {{ [1, 2, 3]|sum }}", "[31, 25, 0] 57 6")]
    [InlineData("{{ ['B', 'a', 'C']|sort }} {{ [3, 1, 2]|sort(reverse=true) }} {{ people|sort(attribute='name')|map(attribute='name')|list }} {{ ['b', 'A']|sort(case_sensitive=true) }}",
        "['a', 'B', 'C'] [3, 2, 1] ['Ann', 'bob', 'Cy'] ['A', 'b']")]
    [InlineData("{{ ['a', 'A', 'b']|unique|list }} {{ ['a', 'A']|unique(case_sensitive=true)|list }} {{ [3, 1]|max }} {{ ['b', 'A']|min }} {{ {'b': 1, 'a': 2}|dictsort }}",
        "['a', 'b'] ['a', 'A'] 3 A [('a', 2), ('b', 1)]")]
    [InlineData("{{ 'abc'|reverse }} {{ [1, 2]|reverse|list }} {{ -3|abs }} {{ 2.5|round }} {{ 2.567|round(2) }} {{ 2.1|round(0, 'ceil') }} {{ 5|round }}",
        "cba [2, 1] 3 2.0 2.57 3.0 5")]
    [InlineData("{{ 'a\\nb\\n'|indent(2) }}|{{ 'a\\n\\nb'|indent(2, true) }}|{{ 'x'|indent(first=true) }}|{{ 'a\\n\\nb'|indent(2, blank=true) }}|{{ 'a\\nb'|indent('> ') }}",
        "a\n  b\n|  a\n\n  b|    x|a\n  \n  b|a\n> b")]
    [InlineData("{{ 'Hello'|replace('l', 'L') }} {{ 'aaa'|replace('a', 'b', 1) }} {{ '<a>&\"\\''|e }} {{ '<b>'|safe }} {{ x|items|list }} {{ undefined_name|items|list }}",
        "HeLLo baa &lt;a&gt;&amp;&#34;&#39; <b> [('a', 1), ('b', 2)] []")]
    [InlineData("{{ '%s and %d' % ('a', 3) }} {{ '%s'|format('z') }} {{ '%.2f' % 3.14159 }} {{ '%5s|%-5s|%05d' % ('a', 'b', 42) }} {{ '%(k)s' % {'k': 'v'} }}",
        "a and 3 z 3.14     a|b    |00042 v")]
    [InlineData("{{ 'one two  three'|wordcount }} [{{ x|attr('a') }}] {{ x|attr('items') is callable }} {{ people|length }}", "3 [] True 3")]
    public void Filters(string template, string expected) => Check(template, expected);

    [Theory]
    [InlineData("{{ {'b': 2, 'a': [1, {'c': 'é\"'}]}|tojson }}", "{\"b\": 2, \"a\": [1, {\"c\": \"é\\\"\"}]}")]
    [InlineData("{{ {'b': 2, 'a': [1, {'c': 'x'}], 'e': [], 'f': {}}|tojson(indent=2, sort_keys=true) }}",
        "{\n  \"a\": [\n    1,\n    {\n      \"c\": \"x\"\n    }\n  ],\n  \"b\": 2,\n  \"e\": [],\n  \"f\": {}\n}")]
    [InlineData("{{ 'é'|tojson(ensure_ascii=true) }} {{ 'é'|tojson }} {{ [1, 2]|tojson(separators=(',', ':')) }} {{ x|tojson(indent='--') }}",
        "\"\\u00e9\" \"é\" [1,2] {\n--\"a\": 1,\n--\"b\": 2\n}")]
    [InlineData("{{ [true, false, none, 1.5, 1.0, 'q\"\\n\\t\\u0001/'] |tojson }} {{ {1: 'int key', true: 'bool key'}|tojson }}",
        "[true, false, null, 1.5, 1.0, \"q\\\"\\n\\t\\u0001/\"] {\"1\": \"bool key\"}")]
    public void ToJson(string template, string expected) => Check(template, expected);

    [Theory]
    [InlineData("{{ 'A'|lower is string }} {{ 1 is number }} {{ true is number }} {{ true is integer }} {{ 1.0 is float }} {{ 'x' is iterable }} {{ {} is mapping }} {{ none is none }}",
        "True True True False True True True True")]
    [InlineData("{{ 3 is divisibleby 3 }} {{ 4 is divisibleby(3) }} {{ 3 is odd }} {{ 2 is even }} {{ 'x' is sameas 'x' }} {{ none is sameas none }} {{ 2 is in [1, 2] }}",
        "True False True True True True True")]
    [InlineData("{{ 'ABC' is upper }} {{ 'abc' is lower }} {{ x is mapping }} {{ people is sequence }} {{ x is not string }} {{ true is boolean }} {{ range is callable }}",
        "True True True True True True True")]
    [InlineData("{{ 1 is eq 1 }} {{ 1 is ne 2 }} {{ 1 is lt 2 }} {{ 2 is ge 2 }} {{ 'trim' is filter }} {{ 'odd' is test }} {{ undefined_name is undefined }}",
        "True True True True True True True")]
    public void Tests(string template, string expected) => Check(template, expected);

    [Theory]
    [InlineData("{% if 1 %}a{% elif 2 %}b{% else %}c{% endif %}{% if 0 %}a{% elif 2 %}b{% else %}c{% endif %}{% if 0 %}a{% elif 0 %}b{% else %}c{% endif %}", "abc")]
    [InlineData("{% for i in range(5) %}{% if i == 1 %}{% continue %}{% endif %}{% if i == 3 %}{% break %}{% endif %}{{ i }}{% endfor %}", "02")]
    [InlineData("{% for x in [] %}a{% else %}empty{% endfor %}{% for x in [1, 2, 3] if x > 1 %}{{ loop.index }}/{{ loop.length }}{% endfor %}", "empty1/22/2")]
    [InlineData("{% for x in 'ab' %}{{ loop.index0 }}{{ loop.revindex }}{{ loop.revindex0 }}{{ loop.first }}{{ loop.last }}{{ loop.previtem }}{{ loop.nextitem }};{% endfor %}",
        "021TrueFalseb;110FalseTruea;")]
    [InlineData("{% for k in x %}{{ k }}{% endfor %}{% for c in 'xyz' %}{{ loop.cycle('a', 'b') }}{% endfor %}{% for k, v in x.items() %}{{ k }}={{ v }};{% endfor %}",
        "ababaa=1;b=2;")]
    [InlineData("{% for i in range(3) %}{% for j in range(2) %}{{ loop.index }}{{ i }}{% endfor %};{% endfor %}", "1020;1121;1222;")]
    [InlineData("{% set x = 0 %}{% for i in range(3) %}{% set x = x + i %}{{ x }}{% endfor %}|{{ x }}", "012|0")]
    [InlineData("{% set ns = namespace(total=0, seen=[]) %}{% for i in range(4) %}{% set ns.total = ns.total + i %}{% endfor %}{{ ns.total }} {{ ns }}",
        "6 <Namespace {'total': 6, 'seen': []}>")]
    [InlineData("{% if true %}{% set inside = 'kept' %}{% endif %}{{ inside }}{% for i in [1] %}{% set local = 'x' %}{% endfor %}[{{ local }}]", "kept[]")]
    [InlineData("{% set a, b = 1, 2 %}{{ a }}{{ b }}{% set c = 1, 2 %}{{ c }}{% set (d, e) = [3, 4] %}{{ d + e }}", "12(1, 2)7")]
    [InlineData("{% set t %}  inner {{ 1 }} {% endset %}[{{ t }}]{% set u | upper %}abc{% endset %}{{ u }}", "[  inner 1 ]ABC")]
    [InlineData("{% with a = 5, b = 6 %}{{ a * b }}{% endwith %}[{{ a }}]{% filter upper %}hello {{ 'x' }}{% endfilter %}", "30[]HELLO X")]
    [InlineData("{% macro greet(name, greeting='Hi') %}{{ greeting }}, {{ name }}!{% endmacro %}{{ greet('Bob') }} {{ greet('Al', greeting='Yo') }} {{ greet(name='Cy') }}",
        "Hi, Bob! Yo, Al! Hi, Cy!")]
    [InlineData("{% macro m(a) %}[{{ a }}|{{ b }}]{% endmacro %}{% set b = 7 %}{{ m(1) }}{{ m() }}", "[1|7][|7]")]
    [InlineData("{% macro fact(n) %}{% if n <= 1 %}1{% else %}{{ n * fact(n - 1)|int }}{% endif %}{% endmacro %}{{ fact(5) }}", "120")]
    // transformers' AssistantTracker extension: {% generation %} renders its body like a call block (own scope).
    [InlineData("{% generation %}{{ 'inside' }}{% set g = 1 %}{% endgeneration %}[{{ g }}]", "inside[]")]
    [InlineData("{% raw %}{{ not evaluated }}{% if %}{% endraw %}", "{{ not evaluated }}{% if %}")]
    [InlineData("{% if false: %}a{% elif true: %}b{% else: %}c{% endif %}{% for i in [1]: %}{{ i }}{% endfor %}{% macro m(): %}m{% endmacro %}{{ m() }}", "b1m")]
    [InlineData("{% if false %}{{ x|no_such_filter }}{{ x is no_such_test }}{% endif %}{{ 1 if true else x|no_such_filter }}", "1")]
    [InlineData("{{ strftime_now('%d %b %Y') }}|{{ strftime_now('%Y-%m-%d %H:%M:%S %A %B %j %p %I %-d') }}", "26 Jul 2024|2024-07-26 09:05:03 Friday July 208 AM 09 26")]
    [InlineData("{{ dict(a=1, b='x') }} {{ namespace({'k': 1}, j=2).k }} {{ range(3)|list }} {{ range(1, 7, 2)|list }} {{ range(3)|length }}",
        "{'a': 1, 'b': 'x'} 1 [0, 1, 2] [1, 3, 5] 3")]
    public void Statements(string template, string expected) => Check(template, expected);

    [Fact]
    public void Variables_MessagesTokensToolsAndExtras()
    {
        var template = ChatTemplate.Parse("{{ messages|length }}|{{ messages[0].role }}:{{ messages[0]['content'] }}|{{ add_generation_prompt }}"
            + "|{{ bos_token }}|{{ eos_token is defined }}|{{ tools }}|{{ tools is none }}|{{ documents is none }}|{{ custom.n + 1 }}|{{ flag }}");
        var extra = new Dictionary<string, object?>
        {
            ["custom"] = new Dictionary<string, object?> { ["n"] = 41 },
            ["flag"] = 2.5f,
        };
        string rendered = template.Render(OneTurn, true, "<s>", null, extra);
        output.WriteLine(rendered);
        Assert.Equal("1|user:Hello|True|<s>|False|None|True|True|42|2.5", rendered);
    }

    [Fact]
    public void Variables_ExtraMayNotReplaceTheRenderArguments()
    {
        var extra = new Dictionary<string, object?> { ["messages"] = "nope" };
        var error = Assert.Throws<ArgumentException>(() => ChatTemplate.ChatMl.Render(OneTurn, true, null, null, extra));
        output.WriteLine(error.Message);
        Assert.Contains("messages", error.Message);
        var unsupported = new Dictionary<string, object?> { ["when"] = DateTime.UnixEpoch };
        Assert.Throws<ArgumentException>(() => ChatTemplate.ChatMl.Render(OneTurn, true, null, null, unsupported));
    }

    [Fact]
    public void StrftimeNow_UsesTheConfiguredClock()
    {
        var options = new ChatTemplateOptions { Clock = new FixedClock(new DateTimeOffset(2025, 1, 5, 18, 30, 0, TimeSpan.Zero)) };
        string rendered = ChatTemplate.Parse("{{ strftime_now('%d %B %Y, %I:%M %p') }}", options).Render(Array.Empty<ChatMessage>(), false, null, null);
        output.WriteLine(rendered);
        Assert.Equal("05 January 2025, 06:30 PM", rendered);
    }
}

/// <summary>A clock fixed at one instant, in UTC.</summary>
internal sealed class FixedClock(DateTimeOffset now) : TimeProvider
{
    public override DateTimeOffset GetUtcNow() => now;
    public override TimeZoneInfo LocalTimeZone => TimeZoneInfo.Utc;
}
