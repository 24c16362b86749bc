// Chat templates of the models the engine serves, copied verbatim from the "chat_template" string of each model's
// tokenizer_config.json (JSON and C# escapes coincide; long templates are split at their line breaks).
namespace Pregate.Tests.ChatTemplates;

internal static class ModelTemplates
{
    // mistralai/Mixtral-8x7B-Instruct-v0.1 as first published: strict user/assistant alternation, no system role.
    public const string MixtralInstruct =
        "{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token}}{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}{% endfor %}";

    // The later Mistral instruct template (mistralai/Mistral-7B-Instruct-v0.1 and v0.2) that accepts an optional
    // leading system message and prepends it to the first user turn.
    public const string MistralInstructWithSystem =
        "{%- if messages[0]['role'] == 'system' %}\n" +
        "    {%- set system_message = messages[0]['content'] %}\n" +
        "    {%- set loop_messages = messages[1:] %}\n" +
        "{%- else %}\n" +
        "    {%- set loop_messages = messages %}\n" +
        "{%- endif %}\n" +
        "\n" +
        "{{- bos_token }}\n" +
        "{%- for message in loop_messages %}\n" +
        "    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}\n" +
        "        {{- raise_exception('After the optional system message, conversation roles must alternate user/assistant/user/assistant/...') }}\n" +
        "    {%- endif %}\n" +
        "    {%- if message['role'] == 'user' %}\n" +
        "        {%- if loop.first and system_message is defined %}\n" +
        "            {{- ' [INST] ' + system_message + '\\n\\n' + message['content'] + ' [/INST]' }}\n" +
        "        {%- else %}\n" +
        "            {{- ' [INST] ' + message['content'] + ' [/INST]' }}\n" +
        "        {%- endif %}\n" +
        "    {%- elif message['role'] == 'assistant' %}\n" +
        "        {{- ' ' + message['content'] + eos_token}}\n" +
        "    {%- else %}\n" +
        "        {{- raise_exception('Only user and assistant roles are supported, with the exception of an initial optional system message!') }}\n" +
        "    {%- endif %}\n" +
        "{%- endfor %}\n";

    // Qwen/Qwen1.5-MoE-A2.7B-Chat: ChatML with a default system prompt (no final period).
    public const string Qwen15MoeChat =
        "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful assistant<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

    // Qwen/Qwen2-57B-A14B-Instruct: ChatML with the default system prompt "You are a helpful assistant.".
    public const string Qwen2MoeInstruct =
        "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

    // allenai/OLMoE-1B-7B-0924-Instruct: Tulu-style <|user|>/<|assistant|> turns.
    public const string OlmoeInstruct =
        "{{ bos_token }}{% for message in messages %}\n{% if message['role'] == 'system' %}\n{{ '<|system|>\n' + message['content'] }}\n{% elif message['role'] == 'user' %}\n{{ '<|user|>\n' + message['content'] }}\n{% elif message['role'] == 'assistant' %}\n{{ '<|assistant|>\n'  + message['content'] + eos_token }}\n{% endif %}\n{% if loop.last and add_generation_prompt %}\n{{ '<|assistant|>' }}\n{% endif %}\n{% endfor %}";

    // meta-llama/Llama-2-7b-chat-hf: [INST] turns, <<SYS>> system block, raise_exception on alternation violations.
    public const string Llama2Chat =
        "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}{% set system_message = messages[0]['content'] %}{% else %}{% set loop_messages = messages %}{% set system_message = false %}{% endif %}{% for message in loop_messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if loop.index0 == 0 and system_message != false %}{% set content = '<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + message['content'] %}{% else %}{% set content = message['content'] %}{% endif %}{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}{% endfor %}";

    // Qwen/Qwen3-30B-A3B: tools, thinking blocks, a reverse scan with namespace() for the last user query, `is string` checks,
    // enable_thinking.
    public const string Qwen3 =
        "{%- if tools %}\n" +
        "    {{- '<|im_start|>system\\n' }}\n" +
        "    {%- if messages[0].role == 'system' %}\n" +
        "        {{- messages[0].content + '\\n\\n' }}\n" +
        "    {%- endif %}\n" +
        "    {{- \"# Tools\\n\\nYou may call one or more functions to assist with the user query.\\n\\nYou are provided with function signatures within <tools></tools> XML tags:\\n<tools>\" }}\n" +
        "    {%- for tool in tools %}\n" +
        "        {{- \"\\n\" }}\n" +
        "        {{- tool | tojson }}\n" +
        "    {%- endfor %}\n" +
        "    {{- \"\\n</tools>\\n\\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\\n<tool_call>\\n{\\\"name\\\": <function-name>, \\\"arguments\\\": <args-json-object>}\\n</tool_call><|im_end|>\\n\" }}\n" +
        "{%- else %}\n" +
        "    {%- if messages[0].role == 'system' %}\n" +
        "        {{- '<|im_start|>system\\n' + messages[0].content + '<|im_end|>\\n' }}\n" +
        "    {%- endif %}\n" +
        "{%- endif %}\n" +
        "{%- set ns = namespace(multi_step_tool=true, last_query_index=messages|length - 1) %}\n" +
        "{%- for message in messages[::-1] %}\n" +
        "    {%- set index = (messages|length - 1) - loop.index0 %}\n" +
        "    {%- if ns.multi_step_tool and message.role == \"user\" and message.content is string and not(message.content.startswith('<tool_response>') and message.content.endswith('</tool_response>')) %}\n" +
        "        {%- set ns.multi_step_tool = false %}\n" +
        "        {%- set ns.last_query_index = index %}\n" +
        "    {%- endif %}\n" +
        "{%- endfor %}\n" +
        "{%- for message in messages %}\n" +
        "    {%- if message.content is string %}\n" +
        "        {%- set content = message.content %}\n" +
        "    {%- else %}\n" +
        "        {%- set content = '' %}\n" +
        "    {%- endif %}\n" +
        "    {%- if (message.role == \"user\") or (message.role == \"system\" and not loop.first) %}\n" +
        "        {{- '<|im_start|>' + message.role + '\\n' + content + '<|im_end|>' + '\\n' }}\n" +
        "    {%- elif message.role == \"assistant\" %}\n" +
        "        {%- set reasoning_content = '' %}\n" +
        "        {%- if message.reasoning_content is string %}\n" +
        "            {%- set reasoning_content = message.reasoning_content %}\n" +
        "        {%- else %}\n" +
        "            {%- if '</think>' in content %}\n" +
        "                {%- set reasoning_content = content.split('</think>')[0].rstrip('\\n').split('<think>')[-1].lstrip('\\n') %}\n" +
        "                {%- set content = content.split('</think>')[-1].lstrip('\\n') %}\n" +
        "            {%- endif %}\n" +
        "        {%- endif %}\n" +
        "        {%- if loop.index0 > ns.last_query_index %}\n" +
        "            {%- if loop.last or (not loop.last and reasoning_content) %}\n" +
        "                {{- '<|im_start|>' + message.role + '\\n<think>\\n' + reasoning_content.strip('\\n') + '\\n</think>\\n\\n' + content.lstrip('\\n') }}\n" +
        "            {%- else %}\n" +
        "                {{- '<|im_start|>' + message.role + '\\n' + content }}\n" +
        "            {%- endif %}\n" +
        "        {%- else %}\n" +
        "            {{- '<|im_start|>' + message.role + '\\n' + content }}\n" +
        "        {%- endif %}\n" +
        "        {%- if message.tool_calls %}\n" +
        "            {%- for tool_call in message.tool_calls %}\n" +
        "                {%- if (loop.first and content) or (not loop.first) %}\n" +
        "                    {{- '\\n' }}\n" +
        "                {%- endif %}\n" +
        "                {%- if tool_call.function %}\n" +
        "                    {%- set tool_call = tool_call.function %}\n" +
        "                {%- endif %}\n" +
        "                {{- '<tool_call>\\n{\"name\": \"' }}\n" +
        "                {{- tool_call.name }}\n" +
        "                {{- '\", \"arguments\": ' }}\n" +
        "                {%- if tool_call.arguments is string %}\n" +
        "                    {{- tool_call.arguments }}\n" +
        "                {%- else %}\n" +
        "                    {{- tool_call.arguments | tojson }}\n" +
        "                {%- endif %}\n" +
        "                {{- '}\\n</tool_call>' }}\n" +
        "            {%- endfor %}\n" +
        "        {%- endif %}\n" +
        "        {{- '<|im_end|>\\n' }}\n" +
        "    {%- elif message.role == \"tool\" %}\n" +
        "        {%- if loop.first or (messages[loop.index0 - 1].role != \"tool\") %}\n" +
        "            {{- '<|im_start|>user' }}\n" +
        "        {%- endif %}\n" +
        "        {{- '\\n<tool_response>\\n' }}\n" +
        "        {{- content }}\n" +
        "        {{- '\\n</tool_response>' }}\n" +
        "        {%- if loop.last or (messages[loop.index0 + 1].role != \"tool\") %}\n" +
        "            {{- '<|im_end|>\\n' }}\n" +
        "        {%- endif %}\n" +
        "    {%- endif %}\n" +
        "{%- endfor %}\n" +
        "{%- if add_generation_prompt %}\n" +
        "    {{- '<|im_start|>assistant\\n' }}\n" +
        "    {%- if enable_thinking is defined and enable_thinking is false %}\n" +
        "        {{- '<think>\\n\\n</think>\\n\\n' }}\n" +
        "    {%- endif %}\n" +
        "{%- endif %}";
}
