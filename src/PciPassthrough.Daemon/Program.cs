using PciPassthrough.Daemon.Hosting;
using Serilog;

Log.Logger = LoggingSetup.CreateBootstrapLogger();
try
{
    var builder = WebApplication.CreateBuilder(CommandLineSwitches.Expand(args));
    builder.AddPassthrough();

    var app = builder.Build();
    app.UsePassthrough();
    app.MapPassthroughApi();

    await app.RunAsync();
    return 0;
}
catch (Exception ex) when (ex is not HostAbortedException)
{
    Log.Fatal(ex, "PciPassthrough daemon failed to start or stopped unexpectedly");
    return 1;
}
finally
{
    await Log.CloseAndFlushAsync();
}
