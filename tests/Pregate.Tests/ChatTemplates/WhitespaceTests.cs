// Whitespace handling as transformers configures Jinja: trim_blocks (newline after a block tag dropped), lstrip_blocks
// (indentation before a block tag dropped), `-` strips all whitespace on its side, `+` opts out, one trailing newline of the
// template dropped, \r\n read as \n. Expected strings are Jinja2 3.1's output.
using Xunit.Abstractions;
using static Pregate.Tests.ChatTemplates.ChatTemplateTesting;

namespace Pregate.Tests.ChatTemplates;

public sealed class WhitespaceTests(ITestOutputHelper output)
{
    [Theory]
    [InlineData("  {% if true %}\n  x\n  {% endif %}\n  {{ 1 }}\n", "  x\n  1")]
    [InlineData("{% for i in [1, 2] %}\n    {% if i == 1 %}\n        one\n    {% else %}\n        two\n    {% endif %}\n{% endfor %}\n", "        one\n        two\n")]
    [InlineData("{%- for i in [1, 2] -%}\n  {{- i -}}\n  ,\n{%- endfor -%}\n", "1,2,")]
    [InlineData("a  {{- ' b ' -}}  c", "a b c")]
    [InlineData("a\n  {{ 'v' }}\n  b", "a\n  v\n  b")]
    [InlineData("{{- '  a  ' -}}   {{ 'b' }}  \n  {%+ if true %}x{% endif %}  \n  {%- if true +%}\ny{% endif %}", "  a  b  \n  x\ny")]
    [InlineData("{# comment #}\n{#- trimmed -#}   \nline", "line")]
    [InlineData("a\n  {# c #}\nb", "a\nb")]
    [InlineData("x {# inline #} y", "x  y")]
    [InlineData("{% raw %}\n  {{ x }}\n  {% endraw %}\nafter", "\n  {{ x }}\nafter")]
    [InlineData("{%- raw -%}\n  {{ x }}  \n{%- endraw %}|", "{{ x }}|")]
    [InlineData("{{ 'ok' }}\n", "ok")]
    [InlineData("{{ 'ok' }}\n\n", "ok\n")]
    [InlineData("\r\nline1\r\nline2\r\n{% if true %}\r\nx\r\n{% endif %}\r\n", "\nline1\nline2\nx\n")]
    [InlineData("{% set x = 1 %}\n{{ x }}", "1")]
    [InlineData("\t{% if true %}tab{% endif %} {% if true %}\n{% endif %}end", "tab end")]
    public void MatchesJinja(string template, string expected)
    {
        string actual = Render(template);
        output.WriteLine($"{template.Replace("\n", "\\n")} => {actual.Replace("\n", "\\n")}");
        Assert.Equal(expected, actual);
    }
}
