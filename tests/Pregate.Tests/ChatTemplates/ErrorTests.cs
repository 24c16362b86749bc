// Bad templates fail with a ChatTemplateException that says what and where: syntax errors at parse time (with line and
// column), runtime errors and raise_exception() at render time, and hostile templates stop at the execution limits quickly.
using System.Diagnostics;
using Pregate.Engine.ChatTemplates;
using Xunit.Abstractions;
using static Pregate.Tests.ChatTemplates.ChatTemplateTesting;

namespace Pregate.Tests.ChatTemplates;

public sealed class ErrorTests(ITestOutputHelper output)
{
    private ChatTemplateException ParseFails(string template)
    {
        var error = Assert.Throws<ChatTemplateException>(() => ChatTemplate.Parse(template));
        output.WriteLine(error.Message);
        Assert.Equal(ChatTemplateErrorKind.Syntax, error.Kind);
        return error;
    }

    private ChatTemplateException RenderFails(string template, ChatTemplateErrorKind kind, ChatTemplateOptions? options = null)
    {
        var parsed = ChatTemplate.Parse(template, options);
        var clock = Stopwatch.StartNew();
        var error = Assert.Throws<ChatTemplateException>(() => parsed.Render(OneTurn, true, "<s>", "</s>"));
        output.WriteLine($"{error.Message} ({clock.ElapsedMilliseconds} ms)");
        Assert.Equal(kind, error.Kind);
        return error;
    }

    [Theory]
    [InlineData("Hello {{ name", 1, 7, "never closed")]
    [InlineData("line\n{% if x", 2, 1, "never closed")]
    [InlineData("{% if x %}\n  open", 1, 4, "'endif'")]
    [InlineData("{% for m in messages %}{% if m %}x{% endfor %}", 1, 38, "unexpected 'endfor', expected 'elif' or 'else' or 'endif'")]
    [InlineData("text {% endif %}", 1, 9, "unexpected 'endif': no block is open")]
    [InlineData("line1\n  {{ x | nofilter }}", 2, 10, "no filter named 'nofilter'")]
    [InlineData("{{ x is frobbed }}", 1, 9, "no test named 'frobbed'")]
    [InlineData("{% frobnicate %}", 1, 4, "unknown tag 'frobnicate'")]
    [InlineData("{% include 'other.jinja' %}", 1, 4, "'include' tag is not supported")]
    [InlineData("{{ 'abc }}", 1, 4, "unterminated string")]
    [InlineData("a {# never closed", 1, 3, "unterminated comment")]
    [InlineData("{% raw %}{{ x }}", 1, 1, "unterminated raw block")]
    [InlineData("{{ 1 + }}", 1, 8, "unexpected '}}'")]
    [InlineData("{{ (1 + 2 }}", 1, 11, "unexpected '}', expected ')'")]
    [InlineData("{% break %}", 1, 4, "'break' outside of a for loop")]
    [InlineData("{% set = 1 %}", 1, 8, "expected a variable name")]
    [InlineData("{{ f(a=1, 2) }}", 1, 11, "positional argument follows keyword argument")]
    [InlineData("{{ 99999999999999999999 }}", 1, 4, "does not fit in 64 bits")]
    [InlineData("{{ '\\x4' }}", 1, 4, "invalid \\x escape")]
    public void SyntaxErrors_NameTheProblemAndItsPosition(string template, int line, int column, string message)
    {
        var error = ParseFails(template);
        Assert.Equal(line, error.Line);
        Assert.Equal(column, error.Column);
        Assert.Contains(message, error.Message);
        Assert.Contains($"line {line}, column {column}", error.Message);
    }

    [Fact]
    public void RaiseException_KeepsTheTemplatesMessageVerbatim()
    {
        var error = RenderFails("{% if messages[0].role != 'system' %}\n  {{ raise_exception('System message required: ' ~ messages[0].role) }}\n{% endif %}",
            ChatTemplateErrorKind.Raised);
        Assert.Equal("System message required: user", error.Message);
        Assert.Equal(2, error.Line);
    }

    [Theory]
    [InlineData("{{ 1 + 'a' }}", "unsupported operand type(s) for +: 'int' and 'str'")]
    [InlineData("{{ 'a' + none }}", "unsupported operand type(s) for +: 'str' and 'NoneType'")]
    [InlineData("{{ missing_function() }}", "'missing_function' is undefined")]
    [InlineData("{{ messages[0].content.nosuchmethod() }}", "'str' object has no attribute 'nosuchmethod'")]
    [InlineData("{{ 1 / 0 }}", "division by zero")]
    [InlineData("{{ 1 // 0 }}", "integer division or modulo by zero")]
    [InlineData("{% set x = 1 %}{% set x.y = 2 %}", "cannot assign attribute on non-namespace object 'x'")]
    [InlineData("{% for a, b in [[1, 2, 3]] %}{% endfor %}", "too many values to unpack (expected 2)")]
    [InlineData("{% for x in none %}{% endfor %}", "'NoneType' object is not iterable")]
    [InlineData("{{ 'a' < 1 }}", "'<' not supported between instances of 'str' and 'int'")]
    [InlineData("{{ 9223372036854775807 + 1 }}", "integer overflow")]
    [InlineData("{{ [1]|tojson }}{{ undefined_thing|tojson }}", "Object of type Undefined is not JSON serializable")]
    [InlineData("{{ 'x'.split('') }}", "empty separator")]
    [InlineData("{{ [1, 2]|map('nofilter')|list }}", "no filter named 'nofilter'")]
    [InlineData("{{ 'abc'.strip(1, 2) }}", "str.strip() takes at most 1 argument(s) (2 given)")]
    [InlineData("{{ {[1]: 2} }}", "unhashable type: 'list'")]
    [InlineData("{% if true %}{{ 'x'|no_such_filter }}{% endif %}", "no filter named 'no_such_filter'")]
    [InlineData("{% if true %}{{ 'x' is no_such_test }}{% endif %}", "no test named 'no_such_test'")]
    [InlineData("{{ [1, 'a']|sort }}", "'<' not supported between instances of")]
    [InlineData("{{ [1, 'a']|max }}", "'<' not supported between instances of 'str' and 'int'")]
    public void RuntimeErrors_AreChatTemplateExceptions(string template, string message)
    {
        var error = RenderFails(template, ChatTemplateErrorKind.Runtime);
        Assert.Contains(message, error.Message);
        Assert.Equal(1, error.Line);
    }

    [Fact]
    public void HugeRange_FailsImmediately()
    {
        var clock = Stopwatch.StartNew();
        var error = RenderFails("{% for i in range(1000000000) %}x{% endfor %}", ChatTemplateErrorKind.LimitExceeded);
        Assert.Contains("range of 1000000000 items is too big", error.Message);
        Assert.True(clock.ElapsedMilliseconds < 2000, $"took {clock.ElapsedMilliseconds} ms");
    }

    [Fact]
    public void NestedLoops_StopAtTheStepBudget()
    {
        var clock = Stopwatch.StartNew();
        var error = RenderFails("{% for i in range(100000) %}{% for j in range(100000) %}{% set k = i * j %}{% endfor %}{% endfor %}",
            ChatTemplateErrorKind.LimitExceeded);
        output.WriteLine($"stopped after {clock.ElapsedMilliseconds} ms with the default budget of {ChatTemplateOptions.Default.MaxSteps} steps");
        Assert.Contains($"more than {ChatTemplateOptions.Default.MaxSteps} steps", error.Message);
        Assert.True(clock.ElapsedMilliseconds < 10_000, $"took {clock.ElapsedMilliseconds} ms");
    }

    [Fact]
    public void StepBudget_IsConfigurable()
    {
        var options = new ChatTemplateOptions { MaxSteps = 1000 };
        RenderFails("{% for i in range(2000) %}{% endfor %}", ChatTemplateErrorKind.LimitExceeded, options);
        Assert.Equal("<|im_start|>user\nHello<|im_end|>\n", ChatTemplate.Parse(ChatTemplate.ChatMlSource, options).Render(OneTurn, false, null, null));
    }

    [Fact]
    public void Output_IsCappedWhileWriting()
    {
        var options = new ChatTemplateOptions { MaxOutputLength = 10_000 };
        var error = RenderFails("{% for i in range(100000) %}{{ 'abcdefghij' }}{% endfor %}", ChatTemplateErrorKind.LimitExceeded, options);
        Assert.Contains("longer than 10000 characters", error.Message);
    }

    [Theory]
    [InlineData("{{ 'x' * 10000000000 }}")]
    [InlineData("{{ [1] * 10000000000 }}")]
    [InlineData("{% set ns = namespace(s='x') %}{% for i in range(64) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}")]
    [InlineData("{% set ns = namespace(s='x') %}{% for i in range(64) %}{% set ns.s = ns.s + ns.s %}{% endfor %}")]
    [InlineData("{% set ns = namespace(s='xxxxxxxxxxxxxxxx') %}{% for i in range(20) %}{% set ns.s = [ns.s, ns.s, ns.s, ns.s]|join %}{% endfor %}")]
    [InlineData("{% set big = 'y' * 4000000 %}{% for i in range(100) %}{% set s = big.upper() %}{% endfor %}")]
    public void TextGrowth_StopsBeforeExhaustingMemory(string template) =>
        RenderFails(template, ChatTemplateErrorKind.LimitExceeded);

    [Fact]
    public void InfiniteMacroRecursion_StopsAtTheCallDepth()
    {
        var error = RenderFails("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}", ChatTemplateErrorKind.LimitExceeded);
        Assert.Contains("nested deeper than 64", error.Message);
    }

    [Fact]
    public void SelfContainingList_StopsAtTheNestingLimit()
    {
        RenderFails("{% set a = [] %}{% set _ = a.append(a) %}{{ a }}", ChatTemplateErrorKind.LimitExceeded);
        RenderFails("{% set a = [] %}{% set _ = a.append(a) %}{{ a|tojson }}", ChatTemplateErrorKind.LimitExceeded);
        RenderFails("{% set a = [] %}{% set _ = a.append(a) %}{{ a == a }}", ChatTemplateErrorKind.LimitExceeded);
    }

    [Theory]
    [InlineData("{{ ", "(", "1", ")", " }}")]
    [InlineData("{{ ", "[", "1", "]", " }}")]
    [InlineData("{{ ", "{'k': ", "1", "}", " }}")]
    [InlineData("{{ ", "not ", "1", "", " }}")]
    [InlineData("{{ ", "-", "1", "", " }}")]
    [InlineData("{{ ", "f(", "1", ")", " }}")]
    [InlineData("", "{% if true %}", "x", "{% endif %}", "")]
    [InlineData("", "{% for i in [1] %}", "x", "{% endfor %}", "")]
    public void DeepNesting_IsASyntaxErrorNotAStackOverflow(string prefix, string opener, string inner, string closer, string suffix)
    {
        const int depth = 10_000;
        string template = prefix + string.Concat(Enumerable.Repeat(opener, depth)) + inner + string.Concat(Enumerable.Repeat(closer, depth)) + suffix;
        var error = ParseFails(template);
        Assert.Contains("nested deeper than", error.Message);
    }

    [Fact]
    public void LoopOverAListThatGrows_SeesOnlyTheItemsPresentAtTheStart()
    {
        string rendered = Render("{% set l = [1, 2] %}{% for x in l %}{% set _ = l.append(x) %}{% endfor %}{{ l }}");
        Assert.Equal("[1, 2, 1, 2]", rendered);
    }

    [Fact]
    public void Options_RejectNonPositiveLimits()
    {
        Assert.Throws<ArgumentException>(() => ChatTemplate.Parse("x", new ChatTemplateOptions { MaxSteps = 0 }));
        Assert.Throws<ArgumentException>(() => ChatTemplate.Parse("x", new ChatTemplateOptions { MaxOutputLength = -1 }));
        Assert.Throws<ArgumentException>(() => ChatTemplate.Parse("x", new ChatTemplateOptions { MaxCallDepth = 0 }));
    }
}
