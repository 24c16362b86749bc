// The web console's static files (Console/*.html, .css, .js, embedded in this assembly): the page at "/" and its assets
// under /console/. They load without the API key; every call the page makes to /v1 sends the key the user types.
using System.Reflection;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;

namespace Pregate.Server;

/// <summary>Serves the console's embedded files with a strict content security policy (same origin only, no inline code).</summary>
internal sealed class ConsolePage
{
    private const string Policy =
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; " +
        "base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

    private readonly record struct Asset(string Path, string ContentType, byte[] Bytes);

    private readonly Asset[] _assets;

    public ConsolePage()
    {
        _assets =
        [
            Load("/", "index.html", "text/html; charset=utf-8"),
            Load("/console/console.css", "console.css", "text/css; charset=utf-8"),
            Load("/console/console.js", "console.js", "text/javascript; charset=utf-8"),
        ];
    }

    public void Map(WebApplication app)
    {
        foreach (var asset in _assets)
        {
            var a = asset;
            app.MapGet(a.Path, ctx => ServeAsync(ctx, a));
        }
    }

    private static Task ServeAsync(HttpContext ctx, Asset a)
    {
        var headers = ctx.Response.Headers;
        headers.ContentSecurityPolicy = Policy;
        headers.XContentTypeOptions = "nosniff";
        headers.CacheControl = "no-cache";
        headers["Referrer-Policy"] = "no-referrer";
        ctx.Response.ContentType = a.ContentType;
        ctx.Response.ContentLength = a.Bytes.Length;
        return ctx.Response.Body.WriteAsync(a.Bytes, ctx.RequestAborted).AsTask();
    }

    private static Asset Load(string path, string file, string contentType)
    {
        string name = "Pregate.Server.Console." + file;
        using var stream = typeof(ConsolePage).Assembly.GetManifestResourceStream(name)
            ?? throw new InvalidOperationException($"the console file {name} is missing from {typeof(ConsolePage).Assembly.GetName().Name}");
        using var copy = new MemoryStream();
        stream.CopyTo(copy);
        return new Asset(path, contentType, copy.ToArray());
    }
}
