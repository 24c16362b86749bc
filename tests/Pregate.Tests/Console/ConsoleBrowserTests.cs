// End-to-end test of the web console in a real headless Chromium (Debian's package, driven by Playwright's bundled
// driver; Playwright never downloads a browser here): chat with streaming, the live expert grid and charts, stop, API key.
using System.Diagnostics;
using System.Text.RegularExpressions;
using Microsoft.Playwright;
using Pregate.Server;
using Xunit.Abstractions;

namespace Pregate.Tests.WebConsole;

public sealed class ConsoleBrowserTests(ITestOutputHelper output)
{
    private const int TestTimeoutMs = 240_000;
    private const string SkipVariable = "PREGATE_SKIP_BROWSER_TESTS";
    private const string ChromiumVariable = "PREGATE_CHROMIUM";
    private const float WaitMs = 30_000;

    /// <summary>Screenshots land here, under the test output directory.</summary>
    private static string ArtifactDirectory => Directory.CreateDirectory(Path.Combine(AppContext.BaseDirectory, "artifacts", "console")).FullName;

    // The browser, or null when the tests are told to skip; fails naming the package when Chromium is missing.
    private async Task<(IPlaywright, IBrowserContext, string)?> LaunchAsync(int width, int height)
    {
        if (Environment.GetEnvironmentVariable(SkipVariable) == "1")
        {
            output.WriteLine($"{SkipVariable}=1: browser test skipped");
            return null;
        }
        string chromium = Environment.GetEnvironmentVariable(ChromiumVariable) is { Length: > 0 } given ? given : "/usr/bin/chromium";
        Assert.True(File.Exists(chromium),
            $"Chromium was not found at {chromium}. Install Debian's package with 'apt-get install -y chromium' " +
            $"(or point {ChromiumVariable} at a Chromium binary), or set {SkipVariable}=1 to skip the browser tests.");
        var playwright = await Playwright.CreateAsync();
        string profile = Directory.CreateTempSubdirectory("pregate-console-chromium-").FullName;
        var context = await playwright.Chromium.LaunchPersistentContextAsync(profile, new BrowserTypeLaunchPersistentContextOptions
        {
            ExecutablePath = chromium,
            Headless = true,
            Args =
            [
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync",
            ],
            ViewportSize = new ViewportSize { Width = width, Height = height },
        });
        return (playwright, context, profile);
    }

    private static async Task CloseAsync(IPlaywright playwright, IBrowserContext context, string profile)
    {
        await context.CloseAsync();
        playwright.Dispose();
        try { Directory.Delete(profile, recursive: true); }
        catch (IOException) { }
    }

    private async Task<string> ShotAsync(IPage page, string name)
    {
        string path = Path.Combine(ArtifactDirectory, name + ".png");
        await page.ScreenshotAsync(new PageScreenshotOptions { Path = path, FullPage = true });
        output.WriteLine($"screenshot: {path}");
        return path;
    }

    // The grid's classes, one character per cell: what the latest token looked like.
    private static Task<string> GridStateAsync(IPage page) =>
        page.EvaluateAsync<string>("() => [...document.querySelectorAll('#grid .cell')].map(c => c.className).join('|')");

    [Fact(Timeout = TestTimeoutMs)]
    public async Task ChatStreamsTheExpertViewMovesAndStopEndsTheReply()
    {
        if (await LaunchAsync(1400, 1000) is not var (playwright, context, profile)) return;
        try
        {
            await using var s = await ConsoleTestSupport.StartAsync();
            var c = s.Session.Config;
            var page = context.Pages.Count > 0 ? context.Pages[0] : await context.NewPageAsync();
            var consoleErrors = new List<string>();
            page.Console += (_, m) => { if (m.Type == "error") consoleErrors.Add($"{m.Text} ({m.Location})"); };
            page.PageError += (_, e) => consoleErrors.Add(e);
            await page.GotoAsync(s.Address.ToString());

            // The grid is built from the events stream's hello; the prompt has the focus.
            await page.Locator("#grid .cell").Nth(c.NumLayers * c.NumExperts - 1).WaitForAsync(new() { Timeout = WaitMs });
            Assert.Equal(c.NumLayers * c.NumExperts, await page.Locator("#grid .cell").CountAsync());
            Assert.Equal("prompt", await page.EvaluateAsync<string>("() => document.activeElement.id"));
            await Assertions.Expect(page.Locator("#model")).ToContainTextAsync(s.Server.ModelId, new() { Timeout = WaitMs });
            await ShotAsync(page, "01-loaded");

            Assert.False(await page.IsVisibleAsync("#key-form"), "no key field when the server has no key");
            await page.ClickAsync(".settings summary");
            await page.FillAsync("#max-tokens", "3000");
            await page.FillAsync("#temperature", "1");
            await page.FillAsync("#seed", "5");
            await page.FillAsync("#prompt", "Tell me everything you know, at length.");
            await page.PressAsync("#prompt", "Enter");

            var reply = page.Locator("#messages .msg.assistant").Last;
            await Assertions.Expect(reply.Locator(".text")).Not.ToBeEmptyAsync(new() { Timeout = WaitMs });
            Assert.True(await page.IsEnabledAsync("#stop"));
            string early = await reply.Locator(".text").InnerTextAsync();
            string gridBefore = await GridStateAsync(page);
            long tokenBefore = long.Parse(await page.GetAttributeAsync("#token-info", "data-token") ?? "-1");

            // Between tokens the grid changes, the token index moves on, the charts fill and the text grows.
            var watch = Stopwatch.StartNew();
            string gridAfter = gridBefore;
            while (watch.ElapsedMilliseconds < WaitMs && (gridAfter = await GridStateAsync(page)) == gridBefore) await Task.Delay(50);
            Assert.NotEqual(gridBefore, gridAfter);
            Assert.Contains("chosen", gridAfter);
            Assert.Contains("res", gridAfter);
            await Assertions.Expect(page.Locator("#token-info")).Not.ToHaveAttributeAsync("data-token", tokenBefore.ToString(), new() { Timeout = WaitMs });
            await Assertions.Expect(page.Locator("#chart-tps .value")).Not.ToHaveTextAsync("–", new() { Timeout = WaitMs });
            await Assertions.Expect(page.Locator("#chart-memory .value")).ToContainTextAsync("/", new() { Timeout = WaitMs });
            await Assertions.Expect(page.Locator("#chart-hit .value")).ToHaveTextAsync(new Regex("%"), new() { Timeout = WaitMs });
            watch.Restart();
            while (watch.ElapsedMilliseconds < WaitMs && (await reply.Locator(".text").InnerTextAsync()).Length <= early.Length) await Task.Delay(50);
            Assert.True((await reply.Locator(".text").InnerTextAsync()).Length > early.Length, "the reply text grows as tokens stream");
            await ShotAsync(page, "02-streaming");

            // Escape stops the reply mid-way: the request is aborted and the server's sequence ends.
            Assert.Equal(1, s.Server.Scheduler.Running);
            await page.Keyboard.PressAsync("Escape");
            await Assertions.Expect(reply).ToHaveAttributeAsync("data-done", "stopped", new() { Timeout = WaitMs });
            await Assertions.Expect(reply.Locator(".figures")).ToContainTextAsync("stopped");
            Assert.True(await page.IsEnabledAsync("#send"));
            Assert.False(await page.IsEnabledAsync("#stop"));
            int tokens = int.Parse(await reply.Locator(".figures").GetAttributeAsync("data-tokens") ?? "0");
            string figures = await reply.Locator(".figures").InnerTextAsync();
            output.WriteLine($"reply figures: {figures}");
            Assert.InRange(tokens, 1, 2999);
            Assert.Matches(new Regex(@"\d+ tokens · [\d.]+ tokens/s · first token \d+ ms"), figures);
            await s.WaitForHealthAsync((running, _) => running == 0, "the stopped reply's sequence ended");
            await ShotAsync(page, "03-stopped");

            // A second turn goes through the same conversation (the stopped reply stays in it).
            await page.FillAsync("#max-tokens", "8");
            await page.FillAsync("#prompt", "And then?");
            await page.ClickAsync("#send");
            await Assertions.Expect(page.Locator("#messages .msg.assistant").Nth(1)).ToHaveAttributeAsync("data-done", "finished", new() { Timeout = WaitMs });
            Assert.Equal(2, await page.Locator("#messages .msg.user").CountAsync());

            // At a phone's width the panes stack and nothing scrolls sideways but the grid.
            await page.SetViewportSizeAsync(390, 844);
            Assert.True(await page.EvaluateAsync<bool>("() => document.documentElement.scrollWidth <= window.innerWidth"), "the page fits a phone's width");
            await ShotAsync(page, "04-phone");
            Assert.Empty(consoleErrors);
        }
        finally
        {
            await CloseAsync(playwright, context, profile);
        }
    }

    [Fact(Timeout = TestTimeoutMs)]
    public async Task ALockedServerAsksForTheKeyAndThenWorks()
    {
        if (await LaunchAsync(1200, 900) is not var (playwright, context, profile)) return;
        try
        {
            const string key = "browser-secret";
            await using var s = await ConsoleTestSupport.StartAsync(new ServerOptions { ApiKey = key });
            var page = context.Pages.Count > 0 ? context.Pages[0] : await context.NewPageAsync();
            await page.GotoAsync(s.Address.ToString());
            await Assertions.Expect(page.Locator("#key-form")).ToBeVisibleAsync(new() { Timeout = WaitMs });
            Assert.Equal("key", await page.EvaluateAsync<string>("() => document.activeElement.id"));
            await page.FillAsync("#key", "wrong");
            await page.PressAsync("#key", "Enter");
            await Assertions.Expect(page.Locator("#key-note")).ToContainTextAsync("refused", new() { Timeout = WaitMs });
            await page.FillAsync("#key", key);
            await page.PressAsync("#key", "Enter");
            await Assertions.Expect(page.Locator("#model")).ToContainTextAsync(s.Server.ModelId, new() { Timeout = WaitMs });
            await page.Locator("#grid .cell").First.WaitForAsync(new() { Timeout = WaitMs });
            await page.ClickAsync(".settings summary");
            await page.FillAsync("#max-tokens", "6");
            await page.FillAsync("#prompt", "Hello");
            await page.PressAsync("#prompt", "Enter");
            await Assertions.Expect(page.Locator("#messages .msg.assistant").Last).ToHaveAttributeAsync("data-done", "finished", new() { Timeout = WaitMs });
            await ShotAsync(page, "05-key");
        }
        finally
        {
            await CloseAsync(playwright, context, profile);
        }
    }
}
