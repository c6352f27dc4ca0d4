"""A `blender` executable made of a Python with PyPI's `bpy` wheel.

Test infrastructure for herd's version matrix (see scripts/bpy-venvs.sh): run
as `python bpy-blender.py ARGS...`, it reads Blender's command line the way
Blender does, in order, for the arguments herd and its tests use:

    --version, -v            print "Blender X.Y.Z" and exit
    -b, --background         (bpy always runs in the background)
    -y / -Y                  allow / forbid scripts in .blend files
    -t N, --threads N        render threads (see below)
    FILE                     open a .blend
    -S NAME, --scene NAME    the scene -o, -F, -E, -f, -a work on
    -E ENGINE, --engine      render engine (either EEVEE id works everywhere)
    -o PATH, --render-output output path
    -F FORMAT                output format (PNG, JPEG, OPEN_EXR, ...)
    -s N / -e N / -j N       frame start / end / step
    -f N[,M-K...]            render frames (-f +1 and -f -1 count from the ends)
    -a                       render the animation
    --python FILE, -P FILE   run a script (an error is printed, as Blender does)
    --python-expr EXPR       run a line of Python
    --python-exit-code N     exit with N when a script or line fails
    --                       the rest is left in sys.argv for scripts

What it cannot map it says on stderr and skips: `-t` has no global
equivalent in bpy, so it is set on every scene after every file load (a
scene's own thread setting, `render.threads`); `--factory-startup` is what
bpy does anyway (there is no user startup file or user add-ons to leave out);
`-noaudio` and logging options have no effect here.
"""

import os
import runpy
import sys
import traceback

NAME = "herd bpy launcher"


def say(message):
    sys.stderr.write(f"{NAME}: {message}\n")
    sys.stderr.flush()


def finish(code):
    """Leaves at once, like Blender does after its arguments: bpy's own
    teardown at interpreter exit is slow and not needed."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (BrokenPipeError, ValueError):
            pass  # a reader that left early (`--version | head -1`)
    os._exit(code)


def engine_id(engine):
    """EEVEE under the id this Blender knows: BLENDER_EEVEE_NEXT in 4.2 to
    4.5, BLENDER_EEVEE before and again from 5.0."""
    import bpy

    eevee = ("BLENDER_EEVEE", "BLENDER_EEVEE_NEXT")
    if engine not in eevee:
        return engine
    known = {item.identifier for item in bpy.types.RenderSettings.bl_rna.properties["engine"].enum_items}
    return next((each for each in (engine, *eevee) if each in known), engine)


def main(args):
    own = args[: args.index("--")] if "--" in args else args
    if "--version" in own or "-v" in own:
        import bpy

        try:
            print(f"Blender {bpy.app.version_string}")
            print(f"\tbuild hash: {bpy.app.build_hash.decode(errors='replace')}")
            print("\tbuilt as: the bpy Python module (PyPI), through herd's launcher")
        except BrokenPipeError:
            pass
        finish(0)
    # Scripts read their arguments after "--" from sys.argv, as in Blender.
    sys.argv = ["blender", *args]

    import bpy

    state = {"scene": None, "threads": None}

    def scene():
        name = state["scene"]
        if name is not None and name in bpy.data.scenes:
            return bpy.data.scenes[name]
        return bpy.context.scene

    def apply_threads(*_args):
        threads = state["threads"]
        if threads is None:
            return
        for each in bpy.data.scenes:
            if threads > 0:
                each.render.threads_mode = "FIXED"
                each.render.threads = threads
            else:
                each.render.threads_mode = "AUTO"

    bpy.app.handlers.load_post.append(bpy.app.handlers.persistent(apply_threads))

    def set_format(image_settings, file_format):
        # Blender 5.0 chooses the media type (image, multilayer, video) first.
        if hasattr(image_settings, "media_type"):
            if file_format == "OPEN_EXR_MULTILAYER":
                image_settings.media_type = "MULTI_LAYER_IMAGE"
            elif file_format == "FFMPEG":
                image_settings.media_type = "VIDEO"
            else:
                image_settings.media_type = "IMAGE"
        image_settings.file_format = file_format

    def render_frames(spec):
        current = scene()
        for part in spec.split(","):
            if "-" in part.strip("-+") and not part.startswith(("+", "-")):
                first, last = part.split("-", 1)
                frames = range(int(first), int(last) + 1)
            elif part.startswith("+"):
                frames = [current.frame_start + int(part[1:])]
            elif part.startswith("-"):
                frames = [current.frame_end - int(part[1:])]
            else:
                frames = [int(part)]
            for frame in frames:
                # As Blender's -f: an animation of one frame, so "#" in the
                # output path becomes the frame number.
                kept = current.frame_start, current.frame_end, current.frame_step
                current.frame_start, current.frame_end, current.frame_step = frame, frame, 1
                try:
                    bpy.ops.render.render(animation=True, scene=current.name)
                finally:
                    current.frame_start, current.frame_end, current.frame_step = kept

    def run_python(run):
        # As Blender: an error is printed and the next argument runs, unless
        # --python-exit-code asked for an exit.
        try:
            run()
        except SystemExit:
            raise
        except BaseException:
            traceback.print_exc()
            if state.get("python_exit_code"):
                finish(state["python_exit_code"])

    def run_script(path):
        run_python(lambda: runpy.run_path(path, run_name="__main__"))

    def run_expr(expr):
        run_python(lambda: exec(compile(expr, "<string>", "exec"), {"__name__": "__main__"}))

    allow_scripts = False
    index = 0

    def value():
        nonlocal index
        index += 1
        if index >= len(args):
            say(f"{args[index - 1]} needs a value")
            finish(1)
        return args[index]

    while index < len(args):
        arg = args[index]
        if arg == "--":
            break
        if arg in {"-b", "--background"}:
            pass
        elif arg in {"-y", "--enable-autoexec"}:
            allow_scripts = True
            bpy.context.preferences.filepaths.use_scripts_auto_execute = True
        elif arg in {"-Y", "--disable-autoexec"}:
            allow_scripts = False
            bpy.context.preferences.filepaths.use_scripts_auto_execute = False
        elif arg in {"-t", "--threads"}:
            state["threads"] = int(value())
            say(f"-t {state['threads']}: bpy has no global thread count; set as each scene's render.threads after every load")
            apply_threads()
        elif arg == "--factory-startup":
            say("--factory-startup: bpy starts from factory settings anyway (no user startup file, no user add-ons)")
        elif arg in {"-noaudio", "--noaudio"}:
            pass
        elif arg in {"-S", "--scene"}:
            state["scene"] = value()
            if state["scene"] not in bpy.data.scenes:
                say(f"no scene {state['scene']!r}")
        elif arg in {"-E", "--engine"}:
            scene().render.engine = engine_id(value())
        elif arg in {"-o", "--render-output"}:
            scene().render.filepath = value()
        elif arg in {"-F", "--render-format"}:
            set_format(scene().render.image_settings, value())
        elif arg in {"-s", "--frame-start"}:
            scene().frame_start = int(value())
        elif arg in {"-e", "--frame-end"}:
            scene().frame_end = int(value())
        elif arg in {"-j", "--frame-jump"}:
            scene().frame_step = int(value())
        elif arg in {"-f", "--render-frame"}:
            render_frames(value())
        elif arg in {"-a", "--render-anim"}:
            bpy.ops.render.render(animation=True, scene=scene().name)
        elif arg in {"-P", "--python"}:
            run_script(value())
        elif arg == "--python-expr":
            run_expr(value())
        elif arg == "--python-exit-code":
            state["python_exit_code"] = int(value())
        elif arg in {"--log-level", "--log"}:
            say(f"{arg} {value()}: ignored (bpy's logging is not Blender's command line)")
        elif arg.startswith("-"):
            say(f"cannot map {arg}: ignored")
        else:
            try:
                bpy.ops.wm.open_mainfile(filepath=os.path.abspath(arg), load_ui=False, use_scripts=allow_scripts)
            except RuntimeError as error:
                # Blender in the background quits when its file cannot be read.
                say(f"cannot open {arg}: {error}")
                finish(1)
            state["scene"] = None
        index += 1
    finish(0)


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except SystemExit as leaving:
        code = leaving.code
        finish(code if isinstance(code, int) else (0 if code is None else 1))
    except RuntimeError as error:
        # A render that fails ("Error: Cannot render, no camera") ends
        # Blender with 1, after saying why in Blender's words.
        sys.stderr.write(f"{error}\n")
        finish(1)
    except BaseException:
        traceback.print_exc()
        finish(1)
